"""Copies one training seed of a table (the search NAME-tS with its candidates, evaluations and
test perplexities) from one run DB into another: a seed trained on a lent GPU
(scripts/gpu_table.sh with SEED=S returns its DB gzipped) joins the table trained here.

    gunzip -k gpu-table/gs24-small-P12.sqlite.gz
    python scripts/merge_table_seed.py gpu-table/gs24-small-P12.sqlite runs/gs24.sqlite gs24-small-P12 1

Refuses when the destination holds that search already, or when the seed is not finished in
the source; everything lands in one transaction. `lshx study replay` then checks the table whole
(lshx.studies.table_check: the same configurations and options; device and threads may differ:
the note of the table says which device trained which seed).
"""
import json
import sqlite3
import sys


def merge(src: str, dst: str, name: str, seed: int) -> dict:
    search = f"{name}-t{seed}"
    con = sqlite3.connect(dst, isolation_level=None)
    try:
        con.execute("ATTACH DATABASE ? AS src", (src,))
        row = con.execute("SELECT status FROM src.searches WHERE name = ?", (search,)).fetchone()
        if row is None or row[0] != "done":
            raise SystemExit(f"merge: {search} is {'missing' if row is None else row[0]} in {src}")
        if con.execute("SELECT 1 FROM main.searches WHERE name = ?", (search,)).fetchone():
            raise SystemExit(f"merge: {dst} holds {search} already")
        args = json.loads(con.execute("SELECT args FROM src.searches WHERE name = ?", (search,)).fetchone()[0])
        s = args["seed"]
        keys = "SELECT eval_key FROM src.candidates WHERE search = ?"
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO main.searches SELECT * FROM src.searches WHERE name = ?", (search,))
        con.execute("INSERT INTO main.candidates SELECT * FROM src.candidates WHERE search = ?", (search,))
        n_ev = con.execute(f"INSERT OR IGNORE INTO main.evals SELECT * FROM src.evals WHERE seed = ? AND eval_key IN "
                           f"({keys})", (s, search)).rowcount
        n_t = con.execute(f"INSERT OR IGNORE INTO main.tests SELECT * FROM src.tests WHERE seed = ? AND eval_key IN "
                          f"({keys})", (s, search)).rowcount
        con.execute("COMMIT")
        return {"search": search, "evals": n_ev, "tests": n_t}
    finally:
        con.close()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    print(merge(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
