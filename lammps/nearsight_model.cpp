/* The torch side of pair_style nearsight: see nearsight_model.h. */

#include "nearsight_model.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace nearsight {

namespace {

std::string strip(const std::string &s)
{
  const char *ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// "2.13.0+cpu" -> "2.13.0": the local part names the wheel's flavour (cpu, cu126, ...),
// not the operator set or the AOTInductor ABI
std::string base_version(const std::string &v)
{
  return strip(v.substr(0, v.find('+')));
}

const std::string &get(const std::map<std::string, std::string> &m, const std::string &key,
                       const std::string &path)
{
  auto it = m.find(key);
  if (it == m.end())
    throw std::runtime_error("model package " + path + " has no '" + key +
                             "' in its metadata; is it a nearsight package (format " + PACKAGE_FORMAT +
                             ")?");
  return it->second;
}

}    // namespace

std::string plugin_torch_version()
{
  return TORCH_VERSION;
}

PackageInfo read_package_info(const std::string &path)
{
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw std::runtime_error("cannot open model package " + path);
  }
  std::unordered_map<std::string, std::string> meta;
  try {
    meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
  } catch (const std::exception &e) {
    throw std::runtime_error("cannot read " + path +
                             " as an AOTInductor package (.pt2): " + std::string(e.what()));
  }

  PackageInfo info;
  info.raw.insert(meta.begin(), meta.end());
  const auto &fmt = get(info.raw, "format", path);
  if (fmt != PACKAGE_FORMAT)
    throw std::runtime_error("model package " + path + " has format '" + fmt + "'; this plugin reads " +
                             PACKAGE_FORMAT);

  std::istringstream species(get(info.raw, "species", path));
  std::string z;
  while (species >> z) {
    try {
      info.species.push_back(std::stoi(z));
    } catch (const std::exception &) {
      throw std::runtime_error("model package " + path + ": species entry '" + z +
                               "' is not an atomic number");
    }
  }
  if (info.species.empty()) throw std::runtime_error("model package " + path + " lists no species");

  const auto &cut = get(info.raw, "cutoff", path);
  try {
    info.cutoff = std::stod(cut);
  } catch (const std::exception &) {
    throw std::runtime_error("model package " + path + ": cutoff '" + cut + "' is not a number");
  }
  if (!(info.cutoff > 0.0))
    throw std::runtime_error("model package " + path + ": cutoff " + cut + " must be positive");

  const auto &layers = get(info.raw, "interaction_layers", path);
  try {
    info.interaction_layers = std::stoi(layers);
  } catch (const std::exception &) {
    throw std::runtime_error("model package " + path + ": interaction_layers '" + layers +
                             "' is not an integer");
  }
  if (info.interaction_layers < 1)
    throw std::runtime_error("model package " + path + ": interaction_layers " + layers +
                             " must be at least 1");

  info.dtype = strip(get(info.raw, "dtype", path));
  info.device = strip(get(info.raw, "device", path));
  info.torch_version = strip(get(info.raw, "torch_version", path));
  info.units = strip(get(info.raw, "units", path));
  auto opt = [&](const char *key) {
    auto it = info.raw.find(key);
    return it == info.raw.end() ? std::string() : strip(it->second);
  };
  info.nearsight_version = opt("nearsight_version");
  info.cpu_isa = opt("cpu_isa");
  info.cpu_flags = opt("cpu_flags");
  info.long_range = opt("long_range");
  std::istringstream inputs(opt("inputs"));
  std::string name;
  while (std::getline(inputs, name, ',')) {
    if (strip(name).rfind("layer_centres_", 0) == 0) ++info.layer_inputs;
    if (strip(name).rfind("layer_chunks_", 0) == 0) ++info.chunk_inputs;
  }
  if (info.layer_inputs != 0 && info.layer_inputs != info.interaction_layers)
    throw std::runtime_error("model package " + path + " takes " + std::to_string(info.layer_inputs) +
                             " layer_centres inputs for " + layers + " interaction layers");
  if (info.chunk_inputs != 0 && info.chunk_inputs != info.layer_inputs)
    throw std::runtime_error("model package " + path + " takes " + std::to_string(info.chunk_inputs) +
                             " layer_chunks inputs for " + std::to_string(info.layer_inputs) +
                             " layer_centres inputs");
  if (info.chunk_inputs != 0) {
    const auto chunk = opt("chunk_atoms");
    try {
      info.chunk_atoms = std::stoi(chunk);
    } catch (const std::exception &) {
      throw std::runtime_error("model package " + path + ": chunk_atoms '" + chunk + "' is not an integer");
    }
    if (info.chunk_atoms < 1)
      throw std::runtime_error("model package " + path + ": chunk_atoms " + chunk + " must be at least 1");
  }
  return info;
}

namespace {

// "avx512_vnni", "-mavx512vnni" and "AVX512VNNI" all name the same feature
std::string normalise_feature(std::string name)
{
  std::string out;
  for (char c : name)
    if (c != '_' && c != '-') out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// the CPU features the kernel reports (x86 "flags", aarch64 "Features"); empty if unknown
std::vector<std::string> cpuinfo_features()
{
  std::vector<std::string> features;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::string word;
      while (words >> word) features.push_back(normalise_feature(word));
      break;
    }
  }
  return features;
}

// the features the compiler flags of the package's kernels ask for: -mavx512f -mfma ...
// and -march=armv8-a+sve (architecture levels and -m...=value options are not features)
std::vector<std::string> flag_features(const std::string &flags)
{
  std::vector<std::string> out;
  std::istringstream words(flags);
  std::string w;
  while (words >> w) {
    if (w.rfind("-march=", 0) == 0) {
      std::istringstream parts(w.substr(7));
      std::string part;
      std::getline(parts, part, '+');    // the architecture level itself
      while (std::getline(parts, part, '+')) out.push_back(part);
    } else if (w.rfind("-m", 0) == 0 && w.find('=') == std::string::npos && w.size() > 2) {
      out.push_back(w.substr(2));
    }
  }
  return out;
}

}    // namespace

bool cpu_supports_isa(const std::string &isa_words, const std::string &flags, std::string &missing)
{
  missing.clear();
  std::string isa;
  std::istringstream(isa_words) >> isa;    // "avx512 avx512_vnni" -> "avx512"
  // inductor's name for "no vector ISA" (vectorisation off): generic code runs anywhere
  const std::string norm = normalise_feature(isa);
  if (norm == "invalidvecisa" || norm == "none" || norm == "default" || norm == "generic") isa.clear();
  auto add = [&missing](const std::string &what) { missing += (missing.empty() ? "" : " ") + what; };
  if (!isa.empty()) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (isa == "avx512") {
      if (!__builtin_cpu_supports("avx512f")) add("avx512f");
      if (!__builtin_cpu_supports("avx512dq")) add("avx512dq");
      if (!__builtin_cpu_supports("avx512vl")) add("avx512vl");
      if (!__builtin_cpu_supports("avx512bw")) add("avx512bw");
      if (!__builtin_cpu_supports("fma")) add("fma");
    } else if (isa == "avx2") {
      if (!__builtin_cpu_supports("avx2")) add("avx2");
      if (!__builtin_cpu_supports("fma")) add("fma");
    } else {
      add(isa + " (this is an x86-64 CPU)");
    }
#elif defined(__aarch64__)
    if (isa == "sve") {
#if defined(__linux__) && defined(HWCAP_SVE)
      if (!(getauxval(AT_HWCAP) & HWCAP_SVE)) add("sve");
#endif
    } else if (isa != "neon" && isa != "asimd") {
      add(isa + " (this is an aarch64 CPU)");
    }
#else
    add(isa + " (unknown CPU architecture)");
#endif
  }
  // every feature the kernels were compiled with, where the kernel tells what the CPU has
  const auto have = cpuinfo_features();
  if (missing.empty() && !have.empty()) {
    for (const auto &feature : flag_features(flags))
      if (std::find(have.begin(), have.end(), normalise_feature(feature)) == have.end() &&
          missing.find(feature) == std::string::npos)
        add(feature);
  }
  return missing.empty();
}

std::string check_package(const PackageInfo &info)
{
  if (!info.long_range.empty())
    return "this model has a long-range part (" + info.long_range +
           ") that the LAMMPS plugin does not compute yet";
  if (info.units != "metal")
    return "the model's units are '" + info.units + "'; the plugin only runs metal-unit packages";
  if (info.dtype != "float64" && info.dtype != "float32")
    return "the model's dtype '" + info.dtype + "' is neither float64 nor float32";
  if (info.device != "cpu" && info.device != "cuda")
    return "the model was compiled for device '" + info.device + "'; the plugin runs cpu and cuda";
  if (base_version(info.torch_version) != base_version(TORCH_VERSION))
    return "the model package was made by torch " + info.torch_version +
           " but this plugin was built against torch " + TORCH_VERSION +
           "; AOTInductor packages only run with the torch that compiled them: re-export the model "
           "with torch " +
           TORCH_VERSION + " or rebuild the plugin against torch " + info.torch_version;
  if (info.device == "cpu") {
    std::string missing;
    if (!cpu_supports_isa(info.cpu_isa, info.cpu_flags, missing))
      return "the model package was compiled for the " + (info.cpu_isa.empty() ? "generic" : info.cpu_isa) +
             " vector instructions, which this CPU lacks (missing: " + missing +
             "); re-export it on this kind of machine";
  }
  return "";
}

/* ---------------------------------------------------------------------- */

struct Model::Impl {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kDouble;
  int chunk_atoms = 0;    // > 0: the package takes layer_chunks_<t> after layer_centres_<t>
};

Model::Model(const std::string &path, const PackageInfo &info, const std::string &device, int device_index) :
    impl_(std::make_unique<Impl>()), device_(device)
{
  impl_->dtype = info.dtype == "float32" ? at::kFloat : at::kDouble;
  impl_->chunk_atoms = info.chunk_inputs > 0 ? info.chunk_atoms : 0;
  c10::DeviceIndex index = -1;
  if (device == "cuda") {
    if (!torch::cuda::is_available())
      throw std::runtime_error("device cuda requested but the libtorch of this plugin sees no CUDA GPU");
    const int count = static_cast<int>(torch::cuda::device_count());
    index = static_cast<c10::DeviceIndex>(device_index % count);
    impl_->device = at::Device(at::kCUDA, index);
  } else if (device != "cpu") {
    throw std::runtime_error("unknown device '" + device + "' (cpu or cuda)");
  }
  try {
    impl_->loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", false, 1, index);
  } catch (const std::exception &e) {
    throw std::runtime_error("cannot load model package " + path + ": " + std::string(e.what()));
  }
}

Model::~Model() = default;

void Model::compute(int64_t n, const double *positions, const int64_t *species, const double *cell,
                    int64_t n_edges, const int64_t *edge_index, const uint8_t *mask,
                    const std::vector<std::vector<int64_t>> &layer_centres, bool want_atomic_virial,
                    Result &result)
{
  c10::NoGradGuard no_grad;
  const auto dev = impl_->device;
  const auto real = at::TensorOptions().dtype(impl_->dtype).device(dev);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  // from_blob does not copy; .to(..., copy=true) makes tensors the model may keep or alter
  auto as_input = [&](void *data, at::IntArrayRef shape, const at::TensorOptions &src,
                      const at::TensorOptions &dst) {
    return at::from_blob(data, shape, src).to(dst, false, true);
  };

  // neighbour_slots: only its length counts, the largest number of edges of one centre (>= 1),
  // the width of the padded neighbour lists of message-passing models
  std::vector<int64_t> per_centre(n, 0);
  int64_t slots = 1;
  for (int64_t e = 0; e < n_edges; ++e) slots = std::max(slots, ++per_centre[edge_index[e]]);

  std::vector<at::Tensor> inputs;
  inputs.reserve(7 + 2 * layer_centres.size());
  inputs.push_back(as_input(const_cast<double *>(positions), {n, 3}, f64, real));
  inputs.push_back(as_input(const_cast<int64_t *>(species), {n}, i64, i64.device(dev)));
  inputs.push_back(as_input(const_cast<double *>(cell), {3, 3}, f64, real));
  inputs.push_back(as_input(const_cast<int64_t *>(edge_index), {2, n_edges}, i64, i64.device(dev)));
  inputs.push_back(at::zeros({n_edges, 3}, real));
  inputs.push_back(as_input(const_cast<uint8_t *>(mask), {n}, at::TensorOptions().dtype(at::kByte),
                            at::TensorOptions().dtype(at::kBool).device(dev)));
  inputs.push_back(at::zeros({slots}, i64.device(dev)));
  for (const auto &centres : layer_centres)
    inputs.push_back(as_input(const_cast<int64_t *>(centres.data()), {static_cast<int64_t>(centres.size())},
                              i64, i64.device(dev)));
  // layer_chunks: only the lengths count, the chunks of chunk_atoms atoms each layer runs in (>= 2)
  if (impl_->chunk_atoms > 0)
    for (const auto &centres : layer_centres) {
      const int64_t m = static_cast<int64_t>(centres.size());
      inputs.push_back(at::zeros({std::max<int64_t>(2, (m + impl_->chunk_atoms - 1) / impl_->chunk_atoms)},
                                 i64.device(dev)));
    }

  std::vector<at::Tensor> out = impl_->loader->run(inputs);
  if (out.size() < 4)
    throw std::runtime_error("the model package returned " + std::to_string(out.size()) +
                             " outputs; a nearsight package returns 4");

  auto host = [](const at::Tensor &t) { return t.detach().to(at::kCPU, at::kDouble).contiguous(); };
  auto copy = [](const at::Tensor &t, int64_t numel, const char *name, double *dst) {
    if (t.numel() != numel)
      throw std::runtime_error(std::string("the model's ") + name + " output has " +
                               std::to_string(t.numel()) + " values, expected " + std::to_string(numel));
    std::memcpy(dst, t.data_ptr<double>(), sizeof(double) * numel);
  };

  result.atomic_energies.resize(n);
  result.forces.resize(3 * n);
  copy(host(out[0]), n, "atomic_energies", result.atomic_energies.data());
  copy(host(out[1]), 3 * n, "forces", result.forces.data());
  copy(host(out[2]), 9, "virial", result.virial);
  if (want_atomic_virial) {
    result.atomic_virial.resize(9 * n);
    copy(host(out[3]), 9 * n, "atomic_virial", result.atomic_virial.data());
  }
}

}    // namespace nearsight
