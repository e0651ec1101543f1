// lcm_scheduler.hpp: a small LCM multistep scheduler in C++17 (diffusers' LCMScheduler algorithm, docs/design.md §4 of
// lcm_ref), in double precision, written for the golden vectors' worked example. It offers the beta schedules linear,
// scaled_linear and trained betas (not squaredcos_cap_v2: those cases are reported unsupported), zero-SNR rescale,
// epsilon / v_prediction / sample, clip_sample and dynamic thresholding, strength, custom timesteps and the per-call
// original_inference_steps. Requests diffusers refuses (or mishandles with a ZeroDivisionError or IndexError) throw
// std::invalid_argument naming the parameter.
//
// Mutants for the tests (each must fail the vectors): LCM_MUTANT_GRID_F32 selects the timesteps in float32,
// LCM_MUTANT_STRENGTH_F32 multiplies orig x strength in float32 (OpenVINO GenAI's arithmetic), LCM_MUTANT_APPEND
// appends a second set_timesteps schedule to the first (OpenVINO GenAI before 2025.0).
#pragma once
#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

struct LcmConfig {
  int num_train_timesteps = 1000;
  double beta_start = 0.00085, beta_end = 0.012;
  std::string beta_schedule = "scaled_linear", prediction_type = "epsilon";
  std::vector<double> trained_betas;     // empty: none
  bool clip_sample = false, thresholding = false, set_alpha_to_one = true, rescale_betas_zero_snr = false;
  double clip_sample_range = 1.0, dynamic_thresholding_ratio = 0.995, sample_max_value = 1.0;
  int original_inference_steps = 50;
  double timestep_scaling = 10.0;
};

// What this port does not offer: the vectors' checker reports such a case unsupported, never as a pass.
struct Unsupported : std::runtime_error { using std::runtime_error::runtime_error; };

class LcmScheduler {
 public:
  explicit LcmScheduler(const LcmConfig& c) : c_(c) {
    const int T = c.num_train_timesteps;
    std::vector<double> beta(T);
    if (!c.trained_betas.empty()) beta = c.trained_betas;
    else if (c.beta_schedule == "linear" || c.beta_schedule == "scaled_linear") {
      bool sq = c.beta_schedule == "scaled_linear";
      double a = sq ? std::sqrt(c.beta_start) : c.beta_start, b = sq ? std::sqrt(c.beta_end) : c.beta_end;
      for (int i = 0; i < T; ++i) {
        double v = T == 1 ? a : a + (b - a) * i / (T - 1);
        beta[i] = sq ? v * v : v;
      }
    } else throw Unsupported("beta_schedule " + c.beta_schedule);
    abar_.resize(T);
    double p = 1.0;
    for (int i = 0; i < T; ++i) abar_[i] = p *= 1.0 - beta[i];
    if (c.rescale_betas_zero_snr) {      // Lin et al. 2023, Algorithm 1: √ᾱ shifted to 0 at T−1, scaled to keep √ᾱ_0
      double r0 = std::sqrt(abar_[0]), rT = std::sqrt(abar_[T - 1]);
      std::vector<double> ab(T);
      for (int i = 0; i < T; ++i) { double r = (std::sqrt(abar_[i]) - rT) * r0 / (r0 - rT); ab[i] = r * r; }
      p = 1.0;
      for (int i = 0; i < T; ++i) { beta[i] = 1.0 - (i ? ab[i] / ab[i - 1] : ab[0]); abar_[i] = p *= 1.0 - beta[i]; }
    }
    beta_ = beta;
  }

  // diffusers' set_timesteps: exactly one of n and custom; orig: the per-call original_inference_steps.
  void set_timesteps(std::optional<int> n, std::optional<int> orig_call, double strength,
                     const std::optional<std::vector<double>>& custom) {
    const int T = c_.num_train_timesteps;
    if (n.has_value() == custom.has_value())
      throw std::invalid_argument("pass exactly one of num_inference_steps and timesteps");
    const int orig = orig_call.value_or(c_.original_inference_steps);
    if (orig < 1) throw std::invalid_argument("original_inference_steps=" + std::to_string(orig) + " must be >= 1");
    if (orig > T) throw std::invalid_argument("original_inference_steps must be <= num_train_timesteps");
    const int k = T / orig;
#ifdef LCM_MUTANT_STRENGTH_F32
    const long L = static_cast<long>(static_cast<float>(orig) * static_cast<float>(strength));
#else
    const long L = static_cast<long>(orig * strength);
#endif
    std::vector<long> out;
    int steps;
    if (custom) {
      const auto& ts = *custom;
      if (ts.empty()) throw std::invalid_argument("timesteps must not be empty");
      for (size_t i = 1; i < ts.size(); ++i)
        if (ts[i] >= ts[i - 1]) throw std::invalid_argument("timesteps must be strictly descending");
      if (ts[0] >= T) throw std::invalid_argument("timesteps[0] must be < num_train_timesteps");
      steps = static_cast<int>(ts.size());
      long keep = std::min<long>(static_cast<long>(steps * strength), steps);
      for (size_t i = steps - keep; i < ts.size(); ++i) out.push_back(static_cast<long>(ts[i]));  // truncates
    } else {
      steps = *n;
      if (steps < 1) throw std::invalid_argument("num_inference_steps=" + std::to_string(steps) + " must be >= 1");
      if (steps > T) throw std::invalid_argument("num_inference_steps must be <= num_train_timesteps");
      if (L < steps) throw std::invalid_argument("num_inference_steps exceeds int(original_inference_steps x strength)");
      if (steps > orig) throw std::invalid_argument("num_inference_steps must be <= original_inference_steps");
      for (int i = 0; i < steps; ++i) {          // origin grid (1..L)·k − 1, descending, at floor(linspace(0, L, n))
#ifdef LCM_MUTANT_GRID_F32
        float step = static_cast<float>(L) / static_cast<float>(steps);
        long idx = static_cast<long>(std::floor(static_cast<float>(i) * step));
#else
        long idx = static_cast<long>(std::floor(i * (static_cast<double>(L) / steps)));
#endif
        out.push_back((L - idx) * k - 1);
      }
    }
#ifdef LCM_MUTANT_APPEND
    timesteps_.insert(timesteps_.end(), out.begin(), out.end());
#else
    timesteps_ = out;
#endif
    num_inference_steps_ = steps;
    begin_index_ = 0;
  }
  const std::vector<long>& timesteps() const { return timesteps_; }
  int num_inference_steps() const { return num_inference_steps_; }
  void set_begin_index(int i) { begin_index_ = i; }

  // Tables (negative t wraps, as diffusers' indexing does).
  double beta(long t) const { return beta_[wrap(t)]; }
  double alphas_cumprod(long t) const { return abar_[wrap(t)]; }
  double final_alpha_cumprod() const { return c_.set_alpha_to_one ? 1.0 : abar_[0]; }
  void scalings(long t, double& c_skip, double& c_out) const {
    const double u = t * c_.timestep_scaling, s2 = 0.25;   // σ_data = 0.5
    c_skip = s2 / (u * u + s2);
    c_out = u / std::sqrt(u * u + s2);
  }

  // One step at the begin index; noise may be null (the last step). Batch rows are the first dimension.
  void step(const std::vector<double>& m, long t, const std::vector<double>& x, const std::vector<double>* z,
            size_t batch, std::vector<double>& prev, std::vector<double>& denoised) const {
    const int i = begin_index_;
    const long t_prev = i + 1 < static_cast<int>(timesteps_.size()) ? timesteps_[i + 1] : t;
    const double a = alphas_cumprod(t), a_prev = t_prev >= 0 ? alphas_cumprod(t_prev) : final_alpha_cumprod();
    double c_skip, c_out;
    scalings(t, c_skip, c_out);
    std::vector<double> x0(x.size());
    for (size_t j = 0; j < x.size(); ++j) {
      if (c_.prediction_type == "epsilon") x0[j] = (x[j] - std::sqrt(1 - a) * m[j]) / std::sqrt(a);
      else if (c_.prediction_type == "v_prediction") x0[j] = std::sqrt(a) * x[j] - std::sqrt(1 - a) * m[j];
      else if (c_.prediction_type == "sample") x0[j] = m[j];
      else throw Unsupported("prediction_type " + c_.prediction_type);
    }
    if (c_.thresholding) {               // per row: the ratio-quantile of |x0| (linear interpolation), in [1, max]
      const size_t n = x0.size() / batch;
      for (size_t r = 0; r < batch; ++r) {
        std::vector<double> v(n);
        for (size_t j = 0; j < n; ++j) v[j] = std::fabs(x0[r * n + j]);
        std::sort(v.begin(), v.end());
        const double pos = c_.dynamic_thresholding_ratio * (n - 1);
        const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, n - 1);
        const double s = std::clamp(v[lo] + (pos - lo) * (v[hi] - v[lo]), 1.0, c_.sample_max_value);
        for (size_t j = 0; j < n; ++j) x0[r * n + j] = std::clamp(x0[r * n + j], -s, s) / s;
      }
    } else if (c_.clip_sample) {
      for (double& v : x0) v = std::clamp(v, -c_.clip_sample_range, c_.clip_sample_range);
    }
    denoised.resize(x.size());
    prev.resize(x.size());
    const bool last = i == num_inference_steps_ - 1;
    for (size_t j = 0; j < x.size(); ++j) {
      denoised[j] = c_out * x0[j] + c_skip * x[j];
      prev[j] = last || !z ? denoised[j] : std::sqrt(a_prev) * denoised[j] + std::sqrt(1 - a_prev) * (*z)[j];
    }
  }

  // add_noise: √ᾱ_t·x0 + √(1−ᾱ_t)·noise; get_velocity: √ᾱ_t·noise − √(1−ᾱ_t)·sample; one timestep per row.
  std::vector<double> forward(bool velocity, const std::vector<double>& a, const std::vector<double>& noise,
                              const std::vector<long>& ts) const {
    std::vector<double> out(a.size());
    const size_t n = a.size() / ts.size();
    for (size_t j = 0; j < a.size(); ++j) {
      const double ab = alphas_cumprod(ts[j / n]);
      out[j] = velocity ? std::sqrt(ab) * noise[j] - std::sqrt(1 - ab) * a[j]
                        : std::sqrt(ab) * a[j] + std::sqrt(1 - ab) * noise[j];
    }
    return out;
  }

 private:
  LcmConfig c_;
  std::vector<double> beta_, abar_;
  std::vector<long> timesteps_;
  int num_inference_steps_ = 0, begin_index_ = 0;
  size_t wrap(long t) const { return static_cast<size_t>(t < 0 ? t + c_.num_train_timesteps : t); }
};
