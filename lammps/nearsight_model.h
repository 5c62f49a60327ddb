/* The torch side of pair_style nearsight: reads, checks and runs a nearsight
   AOTInductor package (.pt2).  This header includes no torch and no LAMMPS
   header, so the two code bases (each with its own copy of {fmt}) never meet in
   one translation unit.  Errors are thrown as std::runtime_error with a message
   meant for the user; the pair style turns them into LAMMPS errors.

   Package interface ("nearsight-aoti-4"), inputs in this order:
     positions [N,3] (dtype), species [N] int64 (atomic numbers), cell [3,3] (dtype),
     edge_index [2,E] int64 (row 0 centre i, row 1 neighbour j), shifts [E,3] (dtype),
     mask [N] bool (true = the atom's energy counts), neighbour_slots [S] int64 (values
     unused; S >= the largest number of edges of one centre), and for a message-passing model
     of T layers layer_centres_0 ... layer_centres_{T-1} [n_t] int64 (the atoms layer t
     updates: those within T-1-t hops of an owned atom; metadata "inputs" lists them), then
     layer_chunks_0 ... layer_chunks_{T-1} [k_t] int64 (values unused; k_t = max(2,
     ceil(n_t / chunk_atoms)), chunk_atoms from the metadata: the chunks layer t runs in)
   outputs: atomic_energies [N] eV, forces [N,3] eV/A (for every atom, ghosts too),
     virial [3,3] eV = -sum_e r_e (x) dE/dr_e, atomic_virial [N,3,3] eV. */

#ifndef NEARSIGHT_MODEL_H
#define NEARSIGHT_MODEL_H

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nearsight {

// the package format this plugin understands
inline constexpr const char *PACKAGE_FORMAT = "nearsight-aoti-4";

// what the metadata of a package says, parsed
struct PackageInfo {
  std::map<std::string, std::string> raw;    // every metadata entry, as stored
  std::vector<int> species;                  // atomic numbers the model knows
  double cutoff = 0.0;                       // Angstrom
  int interaction_layers = 1;                // message-passing layers (ghost cutoff = layers * cutoff)
  int layer_inputs = 0;                      // layer_centres_<t> inputs (interaction_layers, or 0)
  int chunk_inputs = 0;                      // layer_chunks_<t> inputs (layer_inputs, or 0)
  int chunk_atoms = 0;                       // atoms per chunk of those layers (when chunk_inputs)
  std::string dtype;                         // "float64" or "float32"
  std::string device;                        // "cpu" or "cuda"
  std::string torch_version;                 // torch.__version__ of the exporting Python
  std::string nearsight_version;
  std::string cpu_isa;       // vector ISA of the compiled kernels: avx512, avx2, asimd/neon, sve or ""
  std::string cpu_flags;     // optional: the -m... flags they were compiled with (-mavx512f -mfma ...)
  std::string long_range;    // "" when the model is purely short-ranged
  std::string units;         // "metal"
};

// reads the metadata of the package at `path` without loading its compiled code;
// throws std::runtime_error when the file is missing or is not an AOTInductor package
PackageInfo read_package_info(const std::string &path);

// every reason this build cannot run the package ("" when it can): format, units,
// long-range terms, torch version, CPU vector ISA, device
std::string check_package(const PackageInfo &info);

// torch version the plugin was compiled against, e.g. "2.13.0"
std::string plugin_torch_version();

// whether this CPU can execute kernels compiled for `isa` (first word counts: "avx512 avx512_vnni")
// with compiler `flags` (may be empty); `missing` names what it lacks
bool cpu_supports_isa(const std::string &isa, const std::string &flags, std::string &missing);

// the outputs of one evaluation, converted to double and copied to host memory
struct Result {
  std::vector<double> atomic_energies;    // [N]
  std::vector<double> forces;             // [N*3]
  double virial[9] = {0};                 // row-major 3x3
  std::vector<double> atomic_virial;      // [N*9], only when requested
};

class Model {
 public:
  // loads the compiled package onto `device` ("cpu" or "cuda"; cuda uses GPU `device_index`)
  Model(const std::string &path, const PackageInfo &info, const std::string &device, int device_index);
  ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  // one evaluation; positions [n*3] and cell [9] in Angstrom, edge_index [2*n_edges]
  // (all centres first, then all neighbours), mask [n] (1 = energy counts), layer_centres
  // (one index list per layer when the package takes them, else empty)
  void compute(int64_t n, const double *positions, const int64_t *species, const double *cell,
               int64_t n_edges, const int64_t *edge_index, const uint8_t *mask,
               const std::vector<std::vector<int64_t>> &layer_centres, bool want_atomic_virial,
               Result &result);

  const std::string &device() const { return device_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string device_;
};

}    // namespace nearsight

#endif
