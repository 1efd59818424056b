// Runs the CUDA CSR kernels' per-row code (csrc/cuda/csr_warp.h) on the CPU: 32 threads stand
// in for a warp's lanes and a barrier-synchronized exchange for __shfl_xor_sync, so the lane
// arithmetic the GPU runs is checked against PyTorch without a GPU (tests/test_csr_warp.py).
//
//   csr_warp_host IN OUT   IN: int64 rows, cols, B, nnz, index bytes (4 or 8), then crow
//                          (int64, rows + 1), col, val (f32, nnz), xt (f32, cols x B), bias
//                          (f32, rows), gt (f32, rows x B); OUT: yt (rows x B), gw (rows x cols)
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "csr_warp.h"

using lshx::csr_warp::kLanes;

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const long gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  long gen_ = 0;
};

struct Warp {
  float slots[kLanes];
  Barrier barrier{kLanes};
};

struct LaneXor {
  Warp* warp;
  int lane;
  float operator()(float v, int w) const {
    warp->slots[lane] = v;
    warp->barrier.wait();
    const float r = warp->slots[lane ^ w];
    warp->barrier.wait();  // (nobody overwrites a slot before every lane has read)
    return r;
  }
};

template <class T>
static std::vector<T> read(FILE* f, int64_t n) {
  std::vector<T> v(n);
  if (n && fread(v.data(), sizeof(T), n, f) != (size_t)n) {
    fprintf(stderr, "short input\n");
    exit(2);
  }
  return v;
}

template <class Idx>
static void run(FILE* in, FILE* out, int64_t rows, int64_t cols, int64_t B, int64_t nnz) {
  auto crow = read<int64_t>(in, rows + 1);
  auto col = read<Idx>(in, nnz);
  auto val = read<float>(in, nnz);
  auto xt = read<float>(in, cols * B);
  auto bias = read<float>(in, rows);
  auto gt = read<float>(in, rows * B);
  std::vector<float> yt(rows * B, -1.f), gw(rows * cols, 0.f);
  Warp warp;
  std::vector<std::thread> lanes;
  for (int lane = 0; lane < kLanes; ++lane) {
    lanes.emplace_back([&, lane] {
      const LaneXor xs{&warp, lane};
      for (int64_t o = 0; o < rows; ++o) {
        lshx::csr_warp::spmm_row(xt.data(), col.data(), val.data(), crow[o], crow[o + 1], bias[o],
                                 yt.data() + o * B, B, lane, xs);
        lshx::csr_warp::sddmm_row(xt.data(), gt.data() + o * B, col.data(), crow[o], crow[o + 1],
                                  gw.data() + o * cols, B, lane);
      }
    });
  }
  for (auto& t : lanes) t.join();
  fwrite(yt.data(), sizeof(float), yt.size(), out);
  fwrite(gw.data(), sizeof(float), gw.size(), out);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: csr_warp_host IN OUT\n");
    return 2;
  }
  FILE* in = fopen(argv[1], "rb");
  FILE* out = fopen(argv[2], "wb");
  if (!in || !out) {
    fprintf(stderr, "cannot open the files\n");
    return 2;
  }
  auto head = read<int64_t>(in, 5);
  if (head[4] == 4)
    run<int32_t>(in, out, head[0], head[1], head[2], head[3]);
  else
    run<int64_t>(in, out, head[0], head[1], head[2], head[3]);
  fclose(in);
  return fclose(out) == 0 ? 0 : 1;
}
