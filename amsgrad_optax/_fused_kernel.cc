// One pass of AMSGrad over float32 leaves, as an XLA FFI handler for the CPU.
//
// Built by amsgrad_optax/_fused.py at first use (never downloaded); see there.
// Per element it reads p, g, m, v, v_max once and writes p, m, v, v_max once
// (36 bytes), in place: the outputs alias the inputs.
//
// Arguments: a float32[11] of scalars (see kScalars), then five buffers per
// leaf: p, g, m, v, v_max. Results: four buffers per leaf: p, m, v, v_max.
//
// AmsgradFusedStep8 is the same step over 8-bit state (state_bits=8; the
// format is _quantize.py's, whose docstrings say why it is as it is): per
// 256-element block it reads p, g and the three moments' codes once, takes the
// block bounds and new power-of-two scales as the XLA step does, and writes p,
// the codes and the scales (about 18 bytes per parameter).
// The leaves are cut into chunks that the caller and XLA's intra-op threads
// claim from a shared counter; the caller waits only for chunks another thread
// has claimed, so it never waits on a task that has not started.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
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
  kStepMul,       // u = m (kStepMul / kStepDiv) / den
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

// The chunks of one call, claimed from a shared counter, and its scalars.
struct Queue {
  std::vector<Chunk> chunks;
  float s[kScalars];
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

struct Work : Queue {
  std::vector<Leaf> leaves;
};

// jnp.maximum: NaN if either is.
inline float MaxNaN(float a, float b) { return a != a || b != b ? a + b : std::max(a, b); }

// kMaxDivides: whether v / kMaxDiv divides by something other than 1 (a
// division is slower than the memory traffic when the data is in cache). The
// step's factors kStepMul / kStepDiv are one multiplier: 4-6% faster than a
// division per element on 2^16-2^20 params in cache (no different from 2^22),
// and within an ulp of the XLA step's rounding, which itself moves with the
// tree (XLA turns a division by a scalar used once into a multiplication).
template <bool kMaxDivides>
void RunChunk(const Work& w, const Chunk& c) {
  const Leaf& l = w.leaves[c.leaf];
  const float b1 = w.s[kB1], a1 = w.s[kOneMinusB1], b2 = w.s[kB2], a2 = w.s[kOneMinusB2];
  const float max_div = w.s[kMaxDiv], den_scale = w.s[kDenScale];
  const float eps_root = w.s[kEpsRoot], eps = w.s[kEps];
  const float step = w.s[kStepMul] / w.s[kStepDiv], neg_lr = w.s[kNegLr];
  float* __restrict p = l.p;
  const float* __restrict g = l.g;
  float* __restrict m = l.m;
  float* __restrict v = l.v;
  float* __restrict vm = l.v_max;
  for (int64_t i = c.begin; i < c.end; ++i) {
    const float gi = g[i];
    const float mi = a1 * gi + b1 * m[i];
    const float vi = a2 * (gi * gi) + b2 * v[i];
    const float vmi = MaxNaN(vm[i], kMaxDivides ? vi / max_div : vi);
    const float den = std::sqrt(vmi + eps_root) * den_scale + eps;
    // 0/0 is a zero step (no gradient history, eps = eps_root = 0).
    const float u = den == 0.0f ? 0.0f : mi * step / den;
    m[i] = mi;
    v[i] = vi;
    vm[i] = vmi;
    p[i] = p[i] + neg_lr * u;
  }
}

void Run(const Work& w, const Chunk& c) {
  w.s[kMaxDiv] != 1.0f ? RunChunk<true>(w, c) : RunChunk<false>(w, c);
}

template <typename W>
void Drain(const std::shared_ptr<W>& w) {
  const int64_t n = static_cast<int64_t>(w->chunks.size());
  for (int64_t k = w->next.fetch_add(1); k < n; k = w->next.fetch_add(1)) {
    Run(*w, w->chunks[k]);
    w->done.fetch_add(1, std::memory_order_release);
  }
}

constexpr int64_t kChunk = 1 << 15;  // 32 Ki elements: 576 KiB of traffic

// AMSGRAD_OPTAX_FUSED_THREADS caps the threads (the caller included).
int64_t ThreadCap() {
  static const int64_t cap = [] {
    const char* env = std::getenv("AMSGRAD_OPTAX_FUSED_THREADS");
    return env ? std::max<int64_t>(1, std::atoll(env)) : INT64_MAX;
  }();
  return cap;
}

// Runs every chunk of w on the caller and on up to ThreadCap() - 1 of XLA's
// threads; returns when all are done (waiting only for chunks claimed by others).
template <typename W>
void RunAll(ffi::ThreadPool& pool, const std::shared_ptr<W>& w) {
  const int64_t n_chunks = static_cast<int64_t>(w->chunks.size());
  const int64_t helpers = std::min({pool.num_threads(), n_chunks - 1, ThreadCap() - 1});
  for (int64_t h = 0; h < helpers; ++h) {
    pool.Schedule([w] { Drain(w); });
  }
  Drain(w);
  while (w->done.load(std::memory_order_acquire) < n_chunks) {
    std::this_thread::yield();
  }
}

// Adds leaf k to w: in = {p, g, m, v, v_max}, out = {p, m, v, v_max}, n elements each.
void AddLeaf(Work& w, int k, float* const in[5], float* const out[4], int64_t n) {
  // Aliased results are the operands' buffers; others start as copies.
  const float* src[4] = {in[0], in[2], in[3], in[4]};
  for (int j = 0; j < 4; ++j) {
    if (out[j] != src[j]) std::copy_n(src[j], n, out[j]);
  }
  w.leaves.push_back(Leaf{out[0], in[1], out[1], out[2], out[3], n});
  for (int64_t b = 0; b < n; b += kChunk) {
    w.chunks.push_back(Chunk{k, b, std::min(n, b + kChunk)});
  }
}

// A new W (a Queue) holding the call's scalars; nullptr if there are not kScalars of them.
template <typename W>
std::shared_ptr<W> NewWork(ffi::Buffer<ffi::F32> scalars) {
  if (scalars.element_count() != kScalars) return nullptr;
  auto w = std::make_shared<W>();
  std::copy_n(scalars.typed_data(), kScalars, w->s);
  return w;
}

// A float32 operand's (or result's) data and size; false if it is not one.
template <typename T>
bool F32Data(const T& b, float*& data, int64_t& n) {
  if (!b.has_value() || b->element_type() != ffi::F32) return false;
  n = static_cast<int64_t>(b->element_count());
  data = static_cast<float*>(b->untyped_data());
  return true;
}

template <typename T>
bool F32Result(T r, float*& data, int64_t& n) {
  if (!r.has_value() || (*r)->element_type() != ffi::F32) return false;
  n = static_cast<int64_t>((*r)->element_count());
  data = static_cast<float*>((*r)->untyped_data());
  return true;
}

ffi::Error Step(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                ffi::RemainingRets rets) {
  auto w = NewWork<Work>(scalars);
  if (!w) return ffi::Error::InvalidArgument("amsgrad_fused: expected 11 scalars");
  if (args.size() % 5 != 0 || rets.size() != args.size() / 5 * 4) {
    return ffi::Error::InvalidArgument("amsgrad_fused: expected 5 operands and 4 results a leaf");
  }
  const size_t n_leaves = args.size() / 5;
  w->leaves.reserve(n_leaves);
  for (size_t k = 0; k < n_leaves; ++k) {
    float* in[5];
    float* out[4];
    int64_t n = -1, size = -1;
    for (int j = 0; j < 5; ++j) {
      if (!F32Data(args.get<ffi::AnyBuffer>(5 * k + j), in[j], size)) {
        return ffi::Error::InvalidArgument("amsgrad_fused: operands must be float32");
      }
      if (n >= 0 && size != n) {
        return ffi::Error::InvalidArgument("amsgrad_fused: a leaf's operands differ in size");
      }
      n = size;
    }
    for (int j = 0; j < 4; ++j) {
      if (!F32Result(rets.get<ffi::AnyBuffer>(4 * k + j), out[j], size) || size != n) {
        return ffi::Error::InvalidArgument("amsgrad_fused: bad result");
      }
    }
    AddLeaf(*w, static_cast<int>(k), in, out, n);
  }
  RunAll(pool, w);
  return ffi::Error::Success();
}

// The moments of all leaves in one buffer each, the leaves' elements one after
// another in order (optax.flatten's layout). Arguments: the scalars, p and g of
// each leaf, then m, v, v_max; results: p of each leaf, then m, v, v_max.
ffi::Error StepFlat(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                    ffi::RemainingRets rets) {
  auto w = NewWork<Work>(scalars);
  if (!w) return ffi::Error::InvalidArgument("amsgrad_fused_flat: expected 11 scalars");
  if (args.size() < 3 || (args.size() - 3) % 2 != 0 || rets.size() != (args.size() - 3) / 2 + 3) {
    return ffi::Error::InvalidArgument(
        "amsgrad_fused_flat: expected p and g a leaf and three moments; p a leaf and the moments");
  }
  const size_t n_leaves = (args.size() - 3) / 2;
  float* moments_in[3];
  float* moments_out[3];
  int64_t total = -1, size = -1;
  for (int j = 0; j < 3; ++j) {
    if (!F32Data(args.get<ffi::AnyBuffer>(2 * n_leaves + j), moments_in[j], size) ||
        (total >= 0 && size != total)) {
      return ffi::Error::InvalidArgument("amsgrad_fused_flat: moments must be float32, one size");
    }
    total = size;
    if (!F32Result(rets.get<ffi::AnyBuffer>(n_leaves + j), moments_out[j], size) ||
        size != total) {
      return ffi::Error::InvalidArgument("amsgrad_fused_flat: bad moment result");
    }
  }
  w->leaves.reserve(n_leaves);
  int64_t offset = 0;
  for (size_t k = 0; k < n_leaves; ++k) {
    int64_t n = -1, n_g = -1, n_out = -1;
    float *p, *g, *p_out;
    if (!F32Data(args.get<ffi::AnyBuffer>(2 * k), p, n) ||
        !F32Data(args.get<ffi::AnyBuffer>(2 * k + 1), g, n_g) ||
        !F32Result(rets.get<ffi::AnyBuffer>(k), p_out, n_out) || n_g != n || n_out != n) {
      return ffi::Error::InvalidArgument("amsgrad_fused_flat: a leaf's p, g and result differ");
    }
    if (offset + n > total) {
      return ffi::Error::InvalidArgument("amsgrad_fused_flat: the leaves outgrow the moments");
    }
    float* in[5] = {p, g, moments_in[0] + offset, moments_in[1] + offset, moments_in[2] + offset};
    float* out[4] = {p_out, moments_out[0] + offset, moments_out[1] + offset,
                     moments_out[2] + offset};
    AddLeaf(*w, static_cast<int>(k), in, out, n);
    offset += n;
  }
  if (offset != total) {
    return ffi::Error::InvalidArgument("amsgrad_fused_flat: the leaves do not fill the moments");
  }
  RunAll(pool, w);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- 8-bit state

// The code maps of _quantize.py: code c (magnitude k) is the float32 whose bits
// are bits(1.0) - (kMax - k) << 20 (3 fraction bits), 0 for k = 0.
constexpr int32_t kOneBits = 0x3F800000;
constexpr int kShift = 20;
constexpr int32_t kStep = 1 << kShift;
constexpr float kBoundMargin = 1.0f + 0x1p-20f;  // _quantize._BOUND_MARGIN

inline float FromBits(int32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline int32_t ToBits(float f) {
  int32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Branch-free, so that the compiler vectorises the loops that use them.
template <int32_t kMax>
inline float Magnitude(int32_t k) {
  const int32_t bits = kOneBits - (kMax - k) * kStep;
  return FromBits(k == 0 ? 0 : bits);
}

inline float Pow2Ceil(float x) {
  if (!std::isfinite(x)) return x;
  return FromBits((ToBits(x) + 0x7FFFFF) & -0x800000);
}

inline uint32_t Noise(uint32_t index, uint32_t count) {
  uint32_t h = index * 0x9E3779B9u + count * 0x85EBCA77u;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}

// _encode_magnitude: the code of y = mag / scale in [0, 1].
template <int32_t kMax, bool kCeil>
inline int32_t EncodeMagnitude(float y, uint32_t noise) {
  constexpr int32_t base = kOneBits - (kMax - 1) * kStep;
  const float smallest = FromBits(base);
  const int32_t d = ToBits(y) - base;
  int32_t add;
  bool zero;
  if (kCeil) {
    add = kStep - 1;
    zero = y <= 0.0f;
  } else {
    add = static_cast<int32_t>(noise >> (32 - kShift));
    const float u = static_cast<float>(add) * (1.0f / kStep);
    zero = u * smallest >= y;
  }
  const int32_t k = std::min(std::max(1 + ((d + add) >> kShift), 1), kMax);
  return zero ? 0 : k;
}

inline float Ratio(float x, float scale) { return scale > 0.0f ? x / scale : 0.0f; }

struct Leaf8 {
  float* p;
  const float* g;
  int8_t* m;
  uint8_t* v;
  uint8_t* v_max;
  float* m_scale;
  float* v_scale;
  float* v_max_scale;
  int64_t n_cols, k, b;  // a block is k rows by b columns of an (n / n_cols, n_cols) view
};

struct Work8 : Queue {  // its chunks are [begin, end) of a leaf's blocks
  std::vector<Leaf8> leaves;
  uint32_t count;
};

void Run(const Work8& w, const Chunk& c) {
  const Leaf8& l = w.leaves[c.leaf];
  const float b1 = w.s[kB1], a1 = w.s[kOneMinusB1], b2 = w.s[kB2], a2 = w.s[kOneMinusB2];
  const float max_div = w.s[kMaxDiv], den_scale = w.s[kDenScale];
  const float eps_root = w.s[kEpsRoot], eps = w.s[kEps];
  const float step = w.s[kStepMul] / w.s[kStepDiv], neg_lr = w.s[kNegLr];  // as RunChunk
  const bool max_divides = max_div != 1.0f;
  const uint32_t count = w.count;
  // Locals: the int8 stores below may alias anything, l's fields included.
  const int64_t n_cols = l.n_cols, kr = l.k, kb = l.b;
  float* __restrict m_scale = l.m_scale;
  float* __restrict v_scale = l.v_scale;
  float* __restrict vm_scale = l.v_max_scale;
  const int64_t blocks_per_row = n_cols / kb;
  for (int64_t blk = c.begin; blk < c.end; ++blk) {
    const int64_t r0 = blk / blocks_per_row * kr, c0 = blk % blocks_per_row * kb;
    // Bounds, as _quantize.block_bounds: max |g| (the largest of its bits)
    // and each moment's largest code.
    int32_t g_hi = 0, m_hi = 0, v_hi = 0, vm_hi = 0;
    for (int64_t r = r0; r < r0 + kr; ++r) {
      const int64_t row = r * n_cols + c0;
      for (int64_t j = 0; j < kb; ++j) {
        g_hi = std::max(g_hi, ToBits(l.g[row + j]) & 0x7FFFFFFF);
        m_hi = std::max(m_hi, std::abs(static_cast<int32_t>(l.m[row + j])));
        v_hi = std::max(v_hi, static_cast<int32_t>(l.v[row + j]));
        vm_hi = std::max(vm_hi, static_cast<int32_t>(l.v_max[row + j]));
      }
    }
    // NaN where a gradient is not finite, as the XLA step's bound.
    const float g_max = g_hi >= 0x7F800000 ? NAN : FromBits(g_hi);
    const float m_s = m_scale[blk], v_s = v_scale[blk], vm_s = vm_scale[blk];
    const float bound_m = a1 * g_max + b1 * (Magnitude<127>(m_hi) * m_s);
    const float bound_v = a2 * (g_max * g_max) + b2 * (Magnitude<255>(v_hi) * vm_s);
    const float bound_vm =
        MaxNaN(Magnitude<255>(vm_hi) * vm_s, max_divides ? bound_v / max_div : bound_v);
    const float new_m_s = Pow2Ceil(bound_m * kBoundMargin);
    const float new_vm_s = Pow2Ceil(bound_vm * kBoundMargin);
    // x / scale is x times 1 / scale, exactly, for a power-of-two scale whose
    // reciprocal is normal: the loop then has no division but the step's.
    const float inv_m = 1.0f / new_m_s, inv_vm = 1.0f / new_vm_s;
    const bool exact = std::min(new_m_s, new_vm_s) >= 0x1p-126f &&
                       std::max(new_m_s, new_vm_s) <= 0x1p126f;
    auto encode_block = [&](auto by_reciprocal) {
      constexpr bool kByReciprocal = decltype(by_reciprocal)::value;
      const auto ratio = [](float x, float scale, float inv) {
        return kByReciprocal ? x * inv : Ratio(x, scale);
      };
      // Restrict-qualified here: captured, they vectorise less well.
      float* __restrict p = l.p;
      const float* __restrict g = l.g;
      int8_t* __restrict m = l.m;
      uint8_t* __restrict v = l.v;
      uint8_t* __restrict vm = l.v_max;
      for (int64_t r = r0; r < r0 + kr; ++r) {
        const int64_t row = r * n_cols + c0;
        for (int64_t j = 0; j < kb; ++j) {
          const int64_t i = row + j;
          const float gi = g[i];
          const int32_t mc = m[i];
          const float m_mag = Magnitude<127>(std::abs(mc)) * m_s;
          const float m_old = mc < 0 ? -m_mag : m_mag;
          const float v_old = Magnitude<255>(v[i]) * v_s;
          const float vm_old = Magnitude<255>(vm[i]) * vm_s;
          const float mi = a1 * gi + b1 * m_old;
          const float vi = a2 * (gi * gi) + b2 * v_old;
          const float vmi = MaxNaN(vm_old, max_divides ? vi / max_div : vi);
          const float den = std::sqrt(vmi + eps_root) * den_scale + eps;
          const float u = den == 0.0f ? 0.0f : mi * step / den;
          p[i] = p[i] + neg_lr * u;
          const uint32_t noise = Noise(static_cast<uint32_t>(i), count);
          // mu: signed map, stochastic rounding.
          const float ym = ratio(std::fabs(mi), new_m_s, inv_m);
          const int32_t km = EncodeMagnitude<127, false>(ym, noise);
          m[i] = static_cast<int8_t>(mi < 0.0f ? -km : km);
          // nu_max: towards +inf, one code up where a subnormal product still falls short.
          const int32_t kv = EncodeMagnitude<255, true>(ratio(vmi, new_vm_s, inv_vm), 0);
          vm[i] = static_cast<uint8_t>(Magnitude<255>(kv) * new_vm_s < vmi ? std::min(kv + 1, 255)
                                                                            : kv);
          // nu: nu_max's scales, stochastic with the noise's halves swapped.
          const uint32_t rotated = (noise << 16) | (noise >> 16);
          const float yv = ratio(vi, new_vm_s, inv_vm);
          v[i] = static_cast<uint8_t>(EncodeMagnitude<255, false>(yv, rotated));
        }
      }
    };
    exact ? encode_block(std::true_type{}) : encode_block(std::false_type{});
    m_scale[blk] = new_m_s;
    v_scale[blk] = new_vm_s;
    vm_scale[blk] = new_vm_s;
  }
}

// Arguments: the float32[11] scalars, an int32[1 + 3 * leaves] (count, then
// n_cols, k, b a leaf), then eight buffers a leaf: p, g, m codes, m scale,
// v codes, v scale, v_max codes, v_max scale. Results: seven a leaf, the
// same less g, aliased to them.
ffi::Error Step8(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::Buffer<ffi::S32> ints,
                 ffi::RemainingArgs args, ffi::RemainingRets rets) {
  auto w = NewWork<Work8>(scalars);
  if (!w) return ffi::Error::InvalidArgument("amsgrad_fused8: expected 11 scalars");
  if (args.size() % 8 != 0 || rets.size() != args.size() / 8 * 7 ||
      ints.element_count() != 1 + 3 * args.size() / 8) {
    return ffi::Error::InvalidArgument("amsgrad_fused8: expected 8 operands and 7 results a leaf");
  }
  const int32_t* in_ints = ints.typed_data();
  w->count = static_cast<uint32_t>(in_ints[0]);
  const size_t n_leaves = args.size() / 8;
  static constexpr ffi::DataType kTypes[8] = {ffi::F32, ffi::F32, ffi::S8,  ffi::F32,
                                              ffi::U8,  ffi::F32, ffi::U8,  ffi::F32};
  for (size_t k = 0; k < n_leaves; ++k) {
    void* in[8];
    size_t size[8];
    for (int j = 0; j < 8; ++j) {
      auto b = args.get<ffi::AnyBuffer>(8 * k + j);
      if (!b.has_value() || b->element_type() != kTypes[j]) {
        return ffi::Error::InvalidArgument("amsgrad_fused8: an operand has the wrong type");
      }
      in[j] = b->untyped_data();
      size[j] = b->element_count();
    }
    const int64_t n = static_cast<int64_t>(size[0]);
    const int64_t n_cols = in_ints[1 + 3 * k], kr = in_ints[2 + 3 * k], kb = in_ints[3 + 3 * k];
    if (n_cols <= 0 || kr <= 0 || kb <= 0 || n % n_cols != 0 || n_cols % kb != 0 ||
        (n / n_cols) % kr != 0) {
      return ffi::Error::InvalidArgument("amsgrad_fused8: a block tile does not divide its leaf");
    }
    const int64_t n_blocks = n / (kr * kb);
    for (int j : {1, 2, 4, 6}) {
      if (static_cast<int64_t>(size[j]) != n) {
        return ffi::Error::InvalidArgument("amsgrad_fused8: a leaf's operands differ in size");
      }
    }
    for (int j : {3, 5, 7}) {
      if (static_cast<int64_t>(size[j]) != n_blocks) {
        return ffi::Error::InvalidArgument("amsgrad_fused8: a scale does not match its tiles");
      }
    }
    void* out[7];
    static constexpr int kSource[7] = {0, 2, 3, 4, 5, 6, 7};
    static constexpr int kWidth[7] = {4, 1, 4, 1, 4, 1, 4};
    for (int j = 0; j < 7; ++j) {
      auto r = rets.get<ffi::AnyBuffer>(7 * k + j);
      if (!r.has_value()) return ffi::Error::InvalidArgument("amsgrad_fused8: bad result");
      out[j] = (*r)->untyped_data();
      // Aliased results are the operands' buffers; others start as copies.
      if (out[j] != in[kSource[j]]) {
        std::memcpy(out[j], in[kSource[j]], size[kSource[j]] * kWidth[j]);
      }
    }
    w->leaves.push_back(Leaf8{static_cast<float*>(out[0]), static_cast<const float*>(in[1]),
                              static_cast<int8_t*>(out[1]), static_cast<uint8_t*>(out[3]),
                              static_cast<uint8_t*>(out[5]), static_cast<float*>(out[2]),
                              static_cast<float*>(out[4]), static_cast<float*>(out[6]), n_cols, kr,
                              kb});
    const int64_t per_chunk = std::max<int64_t>(1, kChunk / (kr * kb));
    for (int64_t b = 0; b < n_blocks; b += per_chunk) {
      w->chunks.push_back(Chunk{static_cast<int>(k), b, std::min(n_blocks, b + per_chunk)});
    }
  }
  RunAll(pool, w);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AmsgradFusedStep8, Step8,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .RemainingArgs()
                                  .RemainingRets());

XLA_FFI_DEFINE_HANDLER_SYMBOL(AmsgradFusedStep, Step,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets());

XLA_FFI_DEFINE_HANDLER_SYMBOL(AmsgradFusedStepFlat, StepFlat,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets());
