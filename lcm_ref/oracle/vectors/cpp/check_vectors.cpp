// check_vectors.cpp: judge a C++ LCM scheduler by lcm_ref's golden vectors, no Python needed (C++17).
//   g++ -std=c++17 -O1 -o check_vectors check_vectors.cpp && ./check_vectors DIR [--outputs OUTPUTS.json]
// DIR holds timesteps.json, tables.json, steps.json, forward.json. Floats are hex strings (strtod parses them); a
// value passes when its budget is inf, or got == want (NaN matches NaN), or |got − want| <= budget. This port
// computes in double with its own (not correctly rounded) tables: budget tier "float64" for steps and forward,
// "float32" for tables. What the port lacks (Unsupported) is skipped and counted, never passed. --outputs also writes
// what it got for `lcm-ref vectors judge`. Exit 0: no failure; 1: a failure.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include "json_lite.hpp"
#include "lcm_scheduler.hpp"

using json_lite::Value;
static int n_pass = 0, n_fail = 0, n_skip = 0;
static std::ostringstream outputs;   // the results object for --outputs

static double num(const Value& v) { return std::strtod(v.str().c_str(), nullptr); }  // "0x1.8p-3", "inf", "nan"
static std::vector<double> nums(const Value& v) {
  std::vector<double> out;
  for (const auto& x : v.items) out.push_back(num(x));
  return out;
}
static std::string hexs(const std::vector<double>& v) {
  std::string s = "[";
  char buf[64];
  for (size_t i = 0; i < v.size(); ++i) { std::snprintf(buf, sizeof buf, "\"%a\"", v[i]); s += (i ? "," : "") + std::string(buf); }
  return s + "]";
}
static bool passes(double got, double want, double budget) {
  return std::isinf(budget) || got == want || (std::isnan(got) && std::isnan(want)) || std::fabs(got - want) <= budget;
}
// Compares got with the case's want and budget arrays; returns "" or what is wrong.
static std::string compare(const char* name, const std::vector<double>& got, const Value& want, const Value& budget) {
  if (got.size() != want.size()) return std::string(name) + ": wrong length";
  for (size_t j = 0; j < got.size(); ++j)
    if (!passes(got[j], num(want[j]), num(budget[j]))) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s[%zu] = %a, want %s, budget %s", name, j, got[j], want[j].str().c_str(),
                    budget[j].str().c_str());
      return buf;
    }
  return "";
}

static LcmConfig config(const Value& c) {
  LcmConfig k;
  k.num_train_timesteps = static_cast<int>(c["num_train_timesteps"].as_int());
  k.beta_start = num(c["beta_start"]); k.beta_end = num(c["beta_end"]);
  k.beta_schedule = c["beta_schedule"].str(); k.prediction_type = c["prediction_type"].str();
  if (!c["trained_betas"].is_null()) k.trained_betas = nums(c["trained_betas"]);
  k.clip_sample = c["clip_sample"].b; k.clip_sample_range = num(c["clip_sample_range"]);
  k.thresholding = c["thresholding"].b; k.sample_max_value = num(c["sample_max_value"]);
  k.dynamic_thresholding_ratio = num(c["dynamic_thresholding_ratio"]);
  k.set_alpha_to_one = c["set_alpha_to_one"].b; k.rescale_betas_zero_snr = c["rescale_betas_zero_snr"].b;
  k.original_inference_steps = static_cast<int>(c["original_inference_steps"].as_int());
  k.timestep_scaling = num(c["timestep_scaling"]);
  return k;
}
static void request(LcmScheduler& s, const Value& r) {
  auto opt_int = [&](const char* k) { return r[k].is_null() ? std::nullopt : std::optional<int>(r[k].as_int()); };
  std::optional<std::vector<double>> custom;
  if (!r["timesteps"].is_null()) {
    custom.emplace();
    for (const auto& t : r["timesteps"].items) custom->push_back(t.kind == Value::String ? num(t) : std::stod(t.text));
  }
  s.set_timesteps(opt_int("num_inference_steps"), opt_int("original_inference_steps"),
                  r["strength"].is_null() ? 1.0 : num(r["strength"]), custom);
}
static LcmScheduler scheduler(const Value& g, const Value& t) {  // the config, then every request of the case
  LcmScheduler s(config(g["config"]));
  const Value& holder = g.has("request") ? g : t;
  if (holder.has("prior_requests")) for (const auto& r : holder["prior_requests"].items) request(s, r);
  request(s, holder["request"]);
  return s;
}

// Runs one case; returns "" (pass) or what is wrong; appends the port's result to `result` (JSON).
static std::string run(const std::string& type, const Value& g, const Value& t, std::string& result) {
  if (type == "TimestepsTest") {
    bool want_error = t["result"].str() == "error";
    try {
      LcmScheduler s = scheduler(g, t);
      std::vector<double> ts(s.timesteps().begin(), s.timesteps().end());
      result = "{\"timesteps\":[";
      for (size_t i = 0; i < ts.size(); ++i) result += (i ? "," : "") + std::to_string(s.timesteps()[i]);
      result += "],\"num_inference_steps\":" + std::to_string(s.num_inference_steps()) + "}";
      if (want_error) return "accepted a request that must be refused (" + t["error"]["category"].str() + ")";
      const Value& e = t["expected"];
      bool same = ts.size() == e["timesteps"].size() && s.num_inference_steps() == e["num_inference_steps"].as_int();
      for (size_t i = 0; same && i < ts.size(); ++i) same = s.timesteps()[i] == e["timesteps"][i].as_int();
      return same ? "" : "timesteps differ";
    } catch (const std::invalid_argument& ex) {
      result = std::string("{\"error\":{\"category\":\"invalid_argument\",\"message\":\"") + ex.what() + "\"}}";
      return want_error ? "" : std::string("refused a valid request: ") + ex.what();
    }
  }
  LcmScheduler s = type == "StepTest" ? scheduler(g, t) : LcmScheduler(config(g["config"]));
  if (type == "TablesTest") {
    const long tt = t["t"].as_int();
    double c_skip, c_out;
    s.scalings(tt, c_skip, c_out);
    const std::vector<std::pair<const char*, double>> got = {
        {"betas", s.beta(tt)}, {"alphas_cumprod", s.alphas_cumprod(tt)},
        {"sqrt_alphas_cumprod", std::sqrt(s.alphas_cumprod(tt))},
        {"sqrt_one_minus_alphas_cumprod", std::sqrt(1 - s.alphas_cumprod(tt))}, {"c_skip", c_skip}, {"c_out", c_out}};
    std::string wrong, sep = "{";
    for (const auto& [name, v] : got) {
      char buf[120];
      std::snprintf(buf, sizeof buf, "%s\"%s\":\"%a\"", sep.c_str(), name, v);
      result += buf; sep = ",";
      if (!passes(v, num(t["expected"][name]), num(t["budget"]["float32"][name]))) wrong += std::string(name) + " ";
    }
    result += "}";
    return wrong.empty() ? "" : "tables differ: " + wrong;
  }
  const Value& budget = t["budget"]["float64"];
  if (type == "StepTest") {
    std::vector<double> prev, den, noise;
    if (!t["noise"].is_null()) noise = nums(t["noise"]);
    s.set_begin_index(static_cast<int>(t["step_index"].as_int()));
    s.step(nums(t["model_output"]), t["timestep"].as_int(), nums(t["sample"]), t["noise"].is_null() ? nullptr : &noise,
           static_cast<size_t>(g["shape"][0].as_int()), prev, den);
    result = "{\"denoised\":" + hexs(den) + ",\"prev_sample\":" + hexs(prev) + "}";
    std::string w = compare("denoised", den, t["expected"]["denoised"], budget["denoised"]);
    return w.empty() ? compare("prev_sample", prev, t["expected"]["prev_sample"], budget["prev_sample"]) : w;
  }
  std::vector<long> ts;                                        // ForwardTest
  for (const auto& v : t["timesteps"].items) ts.push_back(v.as_int());
  const bool velocity = t["function"].str() == "get_velocity";
  const Value& in = t["inputs"];
  auto got = s.forward(velocity, nums(in[velocity ? "sample" : "original_samples"]), nums(in["noise"]), ts);
  result = "{\"output\":" + hexs(got) + "}";
  return compare(t["function"].str().c_str(), got, t["expected"], budget);
}

int main(int argc, char** argv) {
  if (argc < 2) { std::cerr << "usage: check_vectors DIR [--outputs FILE]\n"; return 2; }
  const std::string dir = argv[1];
  for (const char* name : {"timesteps.json", "tables.json", "steps.json", "forward.json"}) {
    std::ifstream f(dir + "/" + name);
    std::stringstream text;
    text << f.rdbuf();
    const Value doc = json_lite::parse(text.str());
    outputs << (outputs.tellp() > 0 ? ",\n" : "") << "\"" << name << "\":{";
    std::string sep;
    for (const auto& g : doc["testGroups"].items)
      for (const auto& t : g["tests"].items) {
        const std::string id = std::to_string(t["tcId"].as_int());
        if (t.has("profile") && t["profile"].str() != "diffusers") continue;   // a diffusers-profile port
        std::string result, why;
        try {
          why = run(g["type"].str(), g, t, result);
        } catch (const Unsupported& e) {
          ++n_skip;
          result = std::string("{\"unsupported\":\"") + e.what() + "\"}";
          std::cout << "SKIP " << name << " tcId " << id << ": " << e.what() << "\n";
          outputs << sep << "\"" << id << "\":" << result; sep = ",";
          continue;
        }
        outputs << sep << "\"" << id << "\":" << result; sep = ",";
        if (why.empty()) { ++n_pass; continue; }
        ++n_fail;
        std::cout << "FAIL " << name << " tcId " << id << " (" << t["comment"].str() << "): " << why << "\n";
      }
    outputs << "}";
  }
  if (argc == 4 && std::string(argv[2]) == "--outputs")
    std::ofstream(argv[3]) << "{\"outputs\":\"lcm_ref vector outputs\",\"formatVersion\":1,\"implementation\":"
                              "\"lcm_scheduler.hpp\",\"tier\":\"float64\",\"tables\":\"float32\",\"profile\":"
                              "\"diffusers\",\"results\":{" << outputs.str() << "}}\n";
  std::cout << n_pass << " pass, " << n_fail << " fail, " << n_skip << " unsupported (skipped)\n";
  return n_fail ? 1 : 0;
}
