/* pair_style nearsight: a nearsight machine-learning potential, compiled as a torch
   AOTInductor package (.pt2), inside LAMMPS.

     pair_style nearsight [device cpu|cuda] [ghost_layers L] [chunk N]
     pair_coeff * * model.pt2 O H ...     (one element symbol per atom type)

   Needs units metal and newton_pair on.  Every step the plugin hands the package all
   owned and ghost atoms with every ordered pair closer than the model's cutoff
   (centres owned or ghost); the package returns per-atom energies (counted for owned
   atoms), forces on all atoms (ghost forces go back to their owners by LAMMPS's
   reverse communication), the virial and per-atom virials.  The ghost shell is
   interaction_layers * cutoff + skin thick, so message-passing models give the same
   result on any number of MPI ranks.  With chunk N the owned atoms are evaluated at most
   N at a time, in compact cells, each with only the atoms its energies depend on: the same
   result with the memory of about N atoms. */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(nearsight,PairNearsight);
// clang-format on
#else

#ifndef LMP_PAIR_NEARSIGHT_H
#define LMP_PAIR_NEARSIGHT_H

#include "pair.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nearsight {
class Model;
struct PackageInfo;
struct Result;
}    // namespace nearsight

namespace LAMMPS_NS {

class PairNearsight : public Pair {
 public:
  PairNearsight(class LAMMPS *);
  ~PairNearsight() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 protected:
  virtual void allocate();
  // ghost shell thickness beyond the neighbour skin: layers * cutoff
  int ghost_layers() const;
  // evaluates the owned atoms own[0..n_own) on their receptive field and adds their energy,
  // the forces and the virial
  void compute_chunk(const int *own, int n_own);

  std::string device_request;    // from pair_style; "" = the package's own device
  int ghost_layers_user;         // from pair_style ghost_layers; 0 = the model's own
  int chunk_atoms;               // from pair_style chunk: owned atoms per evaluation; 0 = all

  std::unique_ptr<nearsight::PackageInfo> info;
  std::unique_ptr<nearsight::Model> model;
  std::unique_ptr<nearsight::Result> result;
  std::string package_path;
  double cutoff;                      // Angstrom, from the package
  std::vector<int64_t> type2z;        // atomic number of each LAMMPS type (index 1..ntypes)

  // per-step buffers, reused
  std::vector<double> pos;
  std::vector<int64_t> species;
  std::vector<uint8_t> mask;
  std::vector<int64_t> centre, neighbour, edge_index;
  std::vector<int> depth;                              // hops from the nearest owned atom
  std::vector<std::vector<int64_t>> layer_centres;     // the atoms each layer updates
  std::vector<int> owned_sorted;                       // owned atoms ordered by chunk
  std::vector<int> chunk_centres;                      // LAMMPS indices of the centres of one chunk
  std::vector<int> atoms;                              // LAMMPS index of each atom the package sees
  std::vector<int> local_of;                           // the package's index of a LAMMPS atom, or -1
  double origin[3] = {0.0, 0.0, 0.0};                  // subtracted from every position
};

}    // namespace LAMMPS_NS

#endif
#endif
