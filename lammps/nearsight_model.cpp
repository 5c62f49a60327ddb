/* The torch side of pair_style nearsight: see nearsight_model.h. */

#include "nearsight_model.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

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
  info.long_range = opt("long_range");
  return info;
}

bool cpu_supports_isa(const std::string &isa, std::string &missing)
{
  missing.clear();
  if (isa.empty()) return true;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  std::vector<std::pair<const char *, bool>> need;
  if (isa == "avx512") {
    need = {{"avx512f", __builtin_cpu_supports("avx512f")},
            {"avx512bw", __builtin_cpu_supports("avx512bw")},
            {"avx512vl", __builtin_cpu_supports("avx512vl")},
            {"avx512dq", __builtin_cpu_supports("avx512dq")}};
  } else if (isa == "avx2") {
    need = {{"avx2", __builtin_cpu_supports("avx2")}, {"fma", __builtin_cpu_supports("fma")}};
  } else {
    missing = isa + " (this is an x86-64 CPU)";
    return false;
  }
  for (const auto &n : need)
    if (!n.second) missing += (missing.empty() ? "" : " ") + std::string(n.first);
  return missing.empty();
#elif defined(__aarch64__)
  if (isa == "neon") return true;
  if (isa == "sve") {
#if defined(__linux__) && defined(HWCAP_SVE)
    if (getauxval(AT_HWCAP) & HWCAP_SVE) return true;
#endif
    missing = "sve";
    return false;
  }
  missing = isa + " (this is an aarch64 CPU)";
  return false;
#else
  missing = isa + " (unknown CPU architecture)";
  return false;
#endif
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
    if (!cpu_supports_isa(info.cpu_isa, missing))
      return "the model package was compiled for the " + info.cpu_isa +
             " vector instructions, which this CPU lacks (missing: " + missing +
             "); re-export it on this kind of machine";
  }
  return "";
}

/* ---------------------------------------------------------------------- */

struct Model::Impl {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat64;
};

Model::Model(const std::string &path, const PackageInfo &info, const std::string &device, int device_index) :
    impl_(std::make_unique<Impl>()), device_(device)
{
  impl_->dtype = info.dtype == "float32" ? torch::kFloat32 : torch::kFloat64;
  c10::DeviceIndex index = -1;
  if (device == "cuda") {
    if (!torch::cuda::is_available())
      throw std::runtime_error("device cuda requested but the libtorch of this plugin sees no CUDA GPU");
    const int count = static_cast<int>(torch::cuda::device_count());
    index = static_cast<c10::DeviceIndex>(device_index % count);
    impl_->device = torch::Device(torch::kCUDA, index);
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
                    int64_t n_edges, const int64_t *edge_index, const uint8_t *mask, bool want_atomic_virial,
                    Result &result)
{
  torch::NoGradGuard no_grad;
  const auto dev = impl_->device;
  const auto real = torch::TensorOptions().dtype(impl_->dtype).device(dev);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  // from_blob does not copy; .to(..., copy=true) makes tensors the model may keep or alter
  auto as_input = [&](void *data, at::IntArrayRef shape, const torch::TensorOptions &src,
                      const torch::TensorOptions &dst) {
    return torch::from_blob(data, shape, src).to(dst, false, true);
  };

  std::vector<at::Tensor> inputs;
  inputs.reserve(6);
  inputs.push_back(as_input(const_cast<double *>(positions), {n, 3}, f64, real));
  inputs.push_back(as_input(const_cast<int64_t *>(species), {n}, i64, i64.device(dev)));
  inputs.push_back(as_input(const_cast<double *>(cell), {3, 3}, f64, real));
  inputs.push_back(as_input(const_cast<int64_t *>(edge_index), {2, n_edges}, i64, i64.device(dev)));
  inputs.push_back(torch::zeros({n_edges, 3}, real));
  inputs.push_back(as_input(const_cast<uint8_t *>(mask), {n}, torch::TensorOptions().dtype(torch::kUInt8),
                            torch::TensorOptions().dtype(torch::kBool).device(dev)));

  std::vector<at::Tensor> out = impl_->loader->run(inputs);
  if (out.size() < 4)
    throw std::runtime_error("the model package returned " + std::to_string(out.size()) +
                             " outputs; a nearsight package returns 4");

  auto host = [](const at::Tensor &t) { return t.detach().to(torch::kCPU, torch::kFloat64).contiguous(); };
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
