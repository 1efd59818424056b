"""Ray across two nodes: the test starts a Ray cluster of two nodes on this machine (a head and
a second node, each a `ray start --block` process of its own, on the loopback address 127.0.0.2
only, with token authentication and their own temp dirs), runs a smoke search on it with
`--executor ray --ray-address`, kills the driver with SIGKILL midway and resumes it, and checks
that jobs ran on both nodes, that nothing finished was trained again, and that the rounds and
the pick equal the serial run's. Every process it started is stopped by its process id, also
when the test fails.

127.0.0.2, not 127.0.0.1: Ray replaces 127.0.0.1/localhost in an address by the machine's
outward address; any other address of 127.0.0.0/8 is kept as it is (loopback all the same).
"""
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

from lshx.checkpoint import load_checkpoint
from lshx.search.executors import SerialExecutor
from lshx.search.config import SearchConfig
from lshx.search.engine import run_search
from lshx.search.rundb import RunDB

if os.environ.get("CI") == "true":  # CI must run these: `make setup` installs ray
    import ray  # noqa: F401
else:
    pytest.importorskip("ray", reason="ray is not installed (make setup installs it; or pip install 'lshx[ray]')")

HOST = "127.0.0.2"
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("", 0))  # Ray's GCS listens on every interface: the port must be free on all
        return s.getsockname()[1]


def _ours(roots, marker):
    """Pids of the processes this test started: the `ray start` processes, their descendants,
    and any process whose command line names this test's unique temp dir (Ray workers that
    started a session of their own)."""
    children, cmdlines = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmdlines[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo += children.get(pid, [])
    found |= {pid for pid, cmd in cmdlines.items() if marker in cmd}
    found.discard(os.getpid())
    return found


def _stop(procs, marker):
    """SIGTERM to every process this test started, SIGKILL to what is left after 3 s."""
    pids = _ours([p.pid for p in procs if p.poll() is None], marker)
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline:
            for p in procs:
                p.poll()
            pids = {pid for pid in pids if os.path.exists(f"/proc/{pid}") and not _zombie(pid)}
            if not pids:
                break
            time.sleep(0.2)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    return _ours([], marker)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _cluster_nodes(address, env):
    """[(node id, alive, resources)] as the cluster sees it (in a separate driver process)."""
    code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps([(n['NodeID'], n['Alive'], n['Resources']) for n in ray.nodes()]))" % address)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="lshx-ray-", dir="/tmp")  # short: Ray's unix socket paths must fit
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    address = f"{HOST}:{port}"
    procs = []

    def start(name, *extra):
        os.makedirs(os.path.join(tmp, name))
        cmd = [RAY, "start", "--block", f"--node-ip-address={HOST}", "--num-cpus=1",
               "--object-store-memory=80000000", "--temp-dir", os.path.join(tmp, name), "--disable-usage-stats",
               "--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port()),
               "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
               "--runtime-env-agent-port", str(_free_port()), "--metrics-export-port", str(_free_port()), *extra]
        log = open(os.path.join(tmp, f"{name}.log"), "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                      start_new_session=True))
        return procs[-1]

    def wait_for(n_alive, what):
        deadline = time.time() + 180
        while time.time() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{what}: `ray start` exited with {p.returncode}: "
                                       + open(os.path.join(tmp, "head.log")).read()[-2000:])
            nodes = _cluster_nodes(address, env)
            if nodes and sum(alive for _, alive, _ in nodes) == n_alive:
                return nodes
            time.sleep(1)
        raise RuntimeError(f"{what}: no cluster of {n_alive} node(s) at {address} after 180 s")

    try:
        start("head", "--head", f"--port={port}", "--include-dashboard=false", "--dashboard-port",
              str(_free_port()))
        wait_for(1, "head")
        start("second", f"--address={address}", '--resources={"second_node": 1}')
        nodes = wait_for(2, "second node")
        head_id = [nid for nid, alive, res in nodes if alive and "second_node" not in res][0]
        second_id = [nid for nid, alive, res in nodes if alive and "second_node" in res][0]
        yield {"address": address, "env": env, "head": head_id, "second": second_id, "pids": [p.pid for p in procs]}
    finally:
        left = _stop(procs, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"processes of the Ray cluster still running: {sorted(left)}"


def _search_args(tiny_data, db, address, *extra):
    return [sys.executable, "-m", "lshx.cli.main", "search", "ptb-lstm", "--preset", "smoke", "--data", tiny_data,
            "--max-batches", "4", "--db", str(db), "--name", "s", "--json", "--quiet", "--executor", "ray",
            "--ray-address", address, *extra]


def _epochs(db):
    """{(eval key, epoch): (Ray node, created)} of every trained epoch, from the checkpoints."""
    rdb = RunDB(db)
    try:
        out = {}
        for cand in rdb.candidates("s"):
            path = os.path.join(cand["ckpt_dir"], "last.pt")
            if os.path.exists(path):
                for ev in load_checkpoint(path)["lsh_evals"]:
                    out[(cand["eval_key"], ev["epoch"])] = (ev.get("node"), ev["created"])
        return out
    finally:
        rdb.close()


def test_search_on_two_nodes_killed_and_resumed_equals_serial(cluster, tiny_data, tmp_path):
    cfg = SearchConfig.from_preset("ptb-lstm", "smoke", data=tiny_data, max_batches=4)
    serial = run_search(cfg, tmp_path / "serial.sqlite", SerialExecutor(), name="s", quiet=True)

    db = tmp_path / "ray.sqlite"  # the DB and its checkpoints folder: one filesystem for both nodes
    driver = subprocess.Popen(_search_args(tiny_data, db, cluster["address"]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=cluster["env"], cwd=str(tmp_path))
    deadline, n = time.time() + 600, 0
    while time.time() < deadline and driver.poll() is None:
        try:
            with sqlite3.connect(db, timeout=5) as c:
                n = c.execute("SELECT COUNT(*) FROM evals").fetchone()[0]
        except sqlite3.Error:
            pass
        if n >= 10:
            driver.send_signal(signal.SIGKILL)  # the driver's machine goes down; the cluster stays
            break
        time.sleep(0.1)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == -signal.SIGKILL, f"the search ended before it could be killed: {err.decode()}"
    before = _epochs(db)

    again = subprocess.run(_search_args(tiny_data, db, cluster["address"], "--resume"), capture_output=True,
                           text=True, env=cluster["env"], cwd=str(tmp_path), timeout=900)
    assert again.returncode == 0, again.stderr
    res = json.loads(again.stdout)

    # the same search as the serial run: rounds (with every distance) and the pick
    assert res["rounds"] == serial["rounds"]
    assert res["best"]["config"] == serial["best"]["config"]
    assert res["best"]["val_ppl"] == pytest.approx(serial["best"]["val_ppl"], rel=1e-9)
    assert res["best"]["test_ppl"] == pytest.approx(serial["best"]["test_ppl"], rel=1e-9)
    # the resumed driver's jobs ran on the cluster's nodes; over the whole search, on both
    assert res["executor"]["kind"] == "ray"
    assert set(res["executor"]["jobs_per_node"]) <= {cluster["head"], cluster["second"]}
    after = _epochs(db)
    assert {node for node, _ in after.values()} == {cluster["head"], cluster["second"]}
    # nothing finished before the kill was trained again
    for key, value in before.items():
        assert after[key] == value
    assert len(after) > len(before)


def test_jobs_that_no_node_can_hold_are_refused_before_anything_is_written(cluster, tiny_data, tmp_path):
    db = tmp_path / "t.sqlite"
    p = subprocess.run(_search_args(tiny_data, db, cluster["address"], "--threads", "2"), capture_output=True,
                       text=True, env=cluster["env"], cwd=str(tmp_path), timeout=300)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("lshx: error: --threads 2") and "no node" in err
    assert not db.exists()
