// One pass of AMSGrad over float32 leaves, as an XLA FFI handler for the CPU.
//
// Built by amsgrad_optax/_fused.py at first use (never downloaded); see there.
// Per element it reads p, g, m, v, v_max once and writes p, m, v, v_max once
// (36 bytes), in place: the outputs alias the inputs.
//
// Arguments: a float32[11] of scalars (see kScalars), then five buffers per
// leaf: p, g, m, v, v_max. Results: four buffers per leaf: p, m, v, v_max.
// The leaves are cut into chunks that the caller and XLA's intra-op threads
// claim from a shared counter; the caller waits only for chunks another thread
// has claimed, so it never waits on a task that has not started.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Order of the scalar operand.
enum Scalar {
  kB1 = 0,        // b1_t
  kOneMinusB1,    // 1 - b1_t
  kB2,            // b2
  kOneMinusB2,    // 1 - b2
  kMaxDiv,        // v_max = max(v_max, v / kMaxDiv)
  kEpsRoot,       // den = sqrt(v_max + eps_root) * kDenScale + eps
  kDenScale,
  kEps,
  kStepMul,       // u = (m / kStepDiv * kStepMul) / den
  kStepDiv,
  kNegLr,         // p = p + kNegLr * u
  kScalars,
};

struct Leaf {
  float* p;
  const float* g;
  float* m;
  float* v;
  float* v_max;
  int64_t n;
};

struct Chunk {
  int leaf;
  int64_t begin, end;
};

struct Work {
  std::vector<Leaf> leaves;
  std::vector<Chunk> chunks;
  float s[kScalars];
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

// kMaxDivides / kStepDivides: whether those divisions are by something other
// than 1 (a division is slower than the memory traffic when the data is in cache).
template <bool kMaxDivides, bool kStepDivides>
void RunChunk(const Work& w, const Chunk& c) {
  const Leaf& l = w.leaves[c.leaf];
  const float b1 = w.s[kB1], a1 = w.s[kOneMinusB1], b2 = w.s[kB2], a2 = w.s[kOneMinusB2];
  const float max_div = w.s[kMaxDiv], den_scale = w.s[kDenScale];
  const float eps_root = w.s[kEpsRoot], eps = w.s[kEps];
  const float step_mul = w.s[kStepMul], step_div = w.s[kStepDiv], neg_lr = w.s[kNegLr];
  float* __restrict p = l.p;
  const float* __restrict g = l.g;
  float* __restrict m = l.m;
  float* __restrict v = l.v;
  float* __restrict vm = l.v_max;
  for (int64_t i = c.begin; i < c.end; ++i) {
    const float gi = g[i];
    const float mi = a1 * gi + b1 * m[i];
    const float vi = a2 * (gi * gi) + b2 * v[i];
    const float vmi = std::max(vm[i], kMaxDivides ? vi / max_div : vi);
    const float den = std::sqrt(vmi + eps_root) * den_scale + eps;
    // 0/0 is a zero step (no gradient history, eps = eps_root = 0).
    const float mhat = kStepDivides ? mi / step_div * step_mul : mi * step_mul;
    const float u = den == 0.0f ? 0.0f : mhat / den;
    m[i] = mi;
    v[i] = vi;
    vm[i] = vmi;
    p[i] = p[i] + neg_lr * u;
  }
}

void Run(const Work& w, const Chunk& c) {
  const bool max_divides = w.s[kMaxDiv] != 1.0f, step_divides = w.s[kStepDiv] != 1.0f;
  if (max_divides) {
    step_divides ? RunChunk<true, true>(w, c) : RunChunk<true, false>(w, c);
  } else {
    step_divides ? RunChunk<false, true>(w, c) : RunChunk<false, false>(w, c);
  }
}

void Drain(const std::shared_ptr<Work>& w) {
  const int64_t n = static_cast<int64_t>(w->chunks.size());
  for (int64_t k = w->next.fetch_add(1); k < n; k = w->next.fetch_add(1)) {
    Run(*w, w->chunks[k]);
    w->done.fetch_add(1, std::memory_order_release);
  }
}

constexpr int64_t kChunk = 1 << 15;  // 32 Ki elements: 576 KiB of traffic

ffi::Error Step(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                ffi::RemainingRets rets) {
  if (scalars.element_count() != kScalars) {
    return ffi::Error::InvalidArgument("amsgrad_fused: expected 11 scalars");
  }
  if (args.size() % 5 != 0 || rets.size() != args.size() / 5 * 4) {
    return ffi::Error::InvalidArgument("amsgrad_fused: expected 5 operands and 4 results a leaf");
  }
  auto w = std::make_shared<Work>();
  std::copy_n(scalars.typed_data(), kScalars, w->s);
  const size_t n_leaves = args.size() / 5;
  w->leaves.reserve(n_leaves);
  for (size_t k = 0; k < n_leaves; ++k) {
    float* in[5];
    int64_t n = -1;
    for (int j = 0; j < 5; ++j) {
      auto b = args.get<ffi::AnyBuffer>(5 * k + j);
      if (!b.has_value() || b->element_type() != ffi::F32) {
        return ffi::Error::InvalidArgument("amsgrad_fused: operands must be float32");
      }
      if (n >= 0 && static_cast<int64_t>(b->element_count()) != n) {
        return ffi::Error::InvalidArgument("amsgrad_fused: a leaf's operands differ in size");
      }
      n = static_cast<int64_t>(b->element_count());
      in[j] = static_cast<float*>(b->untyped_data());
    }
    float* out[4];
    for (int j = 0; j < 4; ++j) {
      auto r = rets.get<ffi::AnyBuffer>(4 * k + j);
      if (!r.has_value()) return ffi::Error::InvalidArgument("amsgrad_fused: bad result");
      out[j] = static_cast<float*>((*r)->untyped_data());
    }
    // Aliased results are the operands' buffers; others start as copies.
    const float* src[4] = {in[0], in[2], in[3], in[4]};
    for (int j = 0; j < 4; ++j) {
      if (out[j] != src[j]) std::copy_n(src[j], n, out[j]);
    }
    w->leaves.push_back(Leaf{out[0], in[1], out[1], out[2], out[3], n});
    for (int64_t b = 0; b < n; b += kChunk) {
      w->chunks.push_back(Chunk{static_cast<int>(k), b, std::min(n, b + kChunk)});
    }
  }
  const int64_t n_chunks = static_cast<int64_t>(w->chunks.size());
  // AMSGRAD_OPTAX_FUSED_THREADS caps the threads (the caller included).
  static const int64_t cap = [] {
    const char* env = std::getenv("AMSGRAD_OPTAX_FUSED_THREADS");
    return env ? std::max<int64_t>(1, std::atoll(env)) : INT64_MAX;
  }();
  const int64_t helpers = std::min({pool.num_threads(), n_chunks - 1, cap - 1});
  for (int64_t h = 0; h < helpers; ++h) {
    pool.Schedule([w] { Drain(w); });
  }
  Drain(w);
  while (w->done.load(std::memory_order_acquire) < n_chunks) {
    std::this_thread::yield();
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AmsgradFusedStep, Step,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets());
