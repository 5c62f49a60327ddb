/* pair_style nearsight: see pair_nearsight.h and README.md. */

#include "pair_nearsight.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include "nearsight_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <utility>

using namespace LAMMPS_NS;

namespace {

// element symbols by atomic number (index 0 unused)
const char *const ELEMENTS[] = {
    "",   "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si", "P",  "S",
    "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho",
    "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",  "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po",
    "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md",
    "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
constexpr int MAX_Z = sizeof(ELEMENTS) / sizeof(ELEMENTS[0]) - 1;

int atomic_number(const std::string &symbol)
{
  for (int z = 1; z <= MAX_Z; ++z)
    if (symbol == ELEMENTS[z]) return z;
  return 0;
}

std::string element_symbol(int z)
{
  return (z >= 1 && z <= MAX_Z) ? ELEMENTS[z] : "Z=" + std::to_string(z);
}

// rank of this process on its node, to spread ranks over the node's GPUs
int node_local_rank(int world_rank)
{
  for (const char *name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK"}) {
    const char *value = std::getenv(name);
    if (value && *value) return std::atoi(value);
  }
  return world_rank;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairNearsight::PairNearsight(LAMMPS *lmp) :
    Pair(lmp), ghost_layers_user(0), chunk_atoms(0), result(std::make_unique<nearsight::Result>()), cutoff(0.0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the package returns the virial; f.r over owned and ghost atoms would be wrong
  // for message passing and is not needed
  no_virial_fdotr_compute = 1;
  // neighbours of ghost atoms too: the package gets every pair, owned or ghost centre
  ghostneigh = 1;
  // per-atom virials are split half to each end of an edge, not centroid-based
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairNearsight::~PairNearsight()
{
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairNearsight::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) setflag[i][j] = 0;
}

int PairNearsight::ghost_layers() const
{
  if (ghost_layers_user > 0) return ghost_layers_user;
  return info ? info->interaction_layers : 1;
}

/* ----------------------------------------------------------------------
   pair_style nearsight [device cpu|cuda] [ghost_layers L] [chunk N]
------------------------------------------------------------------------- */

void PairNearsight::settings(int narg, char **arg)
{
  device_request.clear();
  ghost_layers_user = 0;
  chunk_atoms = 0;
  int iarg = 0;
  while (iarg < narg) {
    const std::string key = arg[iarg];
    if (iarg + 1 >= narg) error->all(FLERR, "pair_style nearsight: keyword {} needs a value", key);
    const std::string value = arg[iarg + 1];
    if (key == "device") {
      if (value != "cpu" && value != "cuda")
        error->all(FLERR, "pair_style nearsight: device must be cpu or cuda, not {}", value);
      device_request = value;
    } else if (key == "ghost_layers") {
      ghost_layers_user = utils::inumeric(FLERR, value, false, lmp);
      if (ghost_layers_user < 1)
        error->all(FLERR, "pair_style nearsight: ghost_layers must be at least 1, not {}", value);
    } else if (key == "chunk") {
      chunk_atoms = utils::inumeric(FLERR, value, false, lmp);
      if (chunk_atoms < 2)
        error->all(FLERR, "pair_style nearsight: chunk must be at least 2 atoms, not {}", value);
    } else {
      error->all(FLERR, "pair_style nearsight: unknown keyword {} (known: device, ghost_layers, chunk)", key);
    }
    iarg += 2;
  }
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt2 El1 El2 ...   (one element per atom type)
------------------------------------------------------------------------- */

void PairNearsight::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff for pair_style nearsight takes * * <model.pt2> and one element symbol per atom "
               "type ({} types), but got {} arguments",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair_style nearsight must start with * *, not {} {}", arg[0], arg[1]);
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style nearsight requires units metal (eV, Angstrom), but units are {}",
               update->unit_style);

  package_path = arg[2];
  model.reset();
  info.reset();
  try {
    info = std::make_unique<nearsight::PackageInfo>(nearsight::read_package_info(package_path));
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style nearsight: {}", e.what());
  }
  const std::string why = nearsight::check_package(*info);
  if (!why.empty()) error->all(FLERR, "pair_style nearsight: {}: {}", package_path, why);
  cutoff = info->cutoff;

  std::string known;
  for (int z : info->species) known += (known.empty() ? "" : " ") + element_symbol(z);
  type2z.assign(ntypes + 1, 0);
  for (int itype = 1; itype <= ntypes; ++itype) {
    const std::string symbol = arg[2 + itype];
    const int z = atomic_number(symbol);
    if (z == 0)
      error->all(FLERR, "pair_coeff nearsight: {} (atom type {}) is not an element symbol", symbol, itype);
    if (std::find(info->species.begin(), info->species.end(), z) == info->species.end())
      error->all(FLERR, "pair_coeff nearsight: element {} (atom type {}) is not in the model {}, which knows: {}",
                 symbol, itype, package_path, known);
    type2z[itype] = z;
  }

  const std::string device = device_request.empty() ? info->device : device_request;
  if (device != info->device)
    error->all(FLERR,
               "pair_style nearsight: the model package {} was compiled for device {}, but pair_style "
               "asks for device {}; export the model for {}",
               package_path, info->device, device, device);
  try {
    model = std::make_unique<nearsight::Model>(package_path, *info, device, node_local_rank(comm->me));
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style nearsight: {}", e.what());
  }

  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;

  if (comm->me == 0)
    utils::logmesg(lmp,
                   "nearsight: model {} (nearsight {}, torch {}): elements {}, cutoff {} A, {} interaction "
                   "layer(s), {} on {}\n",
                   package_path, info->nearsight_version, info->torch_version, known, cutoff,
                   info->interaction_layers, info->dtype, device);
}

/* ---------------------------------------------------------------------- */

void PairNearsight::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style nearsight requires units metal (eV, Angstrom), but units are {}",
               update->unit_style);
  if (force->newton_pair == 0)
    error->all(FLERR,
               "pair_style nearsight requires newton_pair on: the model returns forces on ghost atoms "
               "that must be sent back to their owners");
  if (!model) error->all(FLERR, "pair_style nearsight: no model loaded; use pair_coeff * * model.pt2 <elements>");

  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  if (chunk_atoms > 0 && info->interaction_layers > 1 && info->layer_inputs != info->interaction_layers)
    error->all(FLERR,
               "pair_style nearsight: chunk needs a package that takes layer_centres (format {}); re-export "
               "{} with this nearsight",
               nearsight::PACKAGE_FORMAT, package_path);

  // an owned atom's energy depends on atoms up to layers * cutoff away; atoms move
  // by at most skin/2 between neighbour-list builds, so the ghost shell must be
  // layers * cutoff + skin thick for the result not to depend on the decomposition
  const int layers = ghost_layers();
  if (ghost_layers_user > 0 && ghost_layers_user < info->interaction_layers && comm->me == 0)
    error->warning(FLERR,
                   "pair_style nearsight: ghost_layers {} is smaller than the model's {} interaction layers; "
                   "energies and forces near sub-domain boundaries will be wrong with more than one MPI rank",
                   ghost_layers_user, info->interaction_layers);
  if (comm->mode != Comm::SINGLE && layers > 1)
    error->all(FLERR, "pair_style nearsight: message-passing models need comm_modify mode single");
  const double needed = layers * cutoff + neighbor->skin;
  if (comm->cutghostuser < needed) comm->cutghostuser = needed;
}

double PairNearsight::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "pair_style nearsight: pair coefficients are not set");
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

/* ---------------------------------------------------------------------- */

void PairNearsight::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  const int nlocal = atom->nlocal;
  // a rank that owns no atoms has no energy and puts no force on its ghosts
  if (nlocal == 0) return;

  // positions relative to the centre of the owned atoms: the model sees only differences,
  // and float32 packages then keep their precision however far the box is from the origin
  double **x = atom->x;
  double lo[3] = {x[0][0], x[0][1], x[0][2]};
  double hi[3] = {x[0][0], x[0][1], x[0][2]};
  for (int i = 1; i < nlocal; ++i)
    for (int k = 0; k < 3; ++k) {
      lo[k] = std::min(lo[k], x[i][k]);
      hi[k] = std::max(hi[k], x[i][k]);
    }
  for (int k = 0; k < 3; ++k) origin[k] = 0.5 * (lo[k] + hi[k]);

  // the owned atoms all at once (the default) or in chunks of at most chunk_atoms; each chunk is
  // evaluated on its own receptive field, so the sum over chunks is the whole rank's result
  const int inum = list->inum;
  local_of.assign(atom->nlocal + atom->nghost, -1);
  if (chunk_atoms <= 0 || inum <= chunk_atoms) {
    compute_chunk(list->ilist, inum);
    return;
  }
  // chunks are compact: a grid of at least inum / chunk_atoms cells over the owned atoms' bounding
  // box, one cell per chunk (split where a cell holds more than chunk_atoms), because the halo a
  // chunk needs grows with its surface. The cell size counts each extent as at least one cutoff,
  // so that a flat layer (a slab, a 2D material) is cut into columns, not into slivers
  const double ncells = std::ceil(static_cast<double>(inum) / chunk_atoms);
  double extent[3], volume = 1.0;
  for (int k = 0; k < 3; ++k) {
    extent[k] = hi[k] - lo[k] + 1e-6;
    volume *= std::max(extent[k], cutoff);
  }
  const double side = std::cbrt(volume / ncells);
  int64_t grid[3];
  for (int k = 0; k < 3; ++k) grid[k] = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(extent[k] / side)));
  std::vector<std::pair<int64_t, int>> keyed(inum);
  for (int ii = 0; ii < inum; ++ii) {
    const int i = list->ilist[ii];
    int64_t c[3];
    for (int k = 0; k < 3; ++k)
      c[k] = std::min<int64_t>(grid[k] - 1, static_cast<int64_t>((x[i][k] - lo[k]) / extent[k] * grid[k]));
    keyed[ii] = {(c[2] * grid[1] + c[1]) * grid[0] + c[0], i};
  }
  std::sort(keyed.begin(), keyed.end());
  owned_sorted.resize(inum);
  for (int ii = 0; ii < inum; ++ii) owned_sorted[ii] = keyed[ii].second;
  for (int first = 0; first < inum;) {
    int last = first;
    while (last < inum && keyed[last].first == keyed[first].first && last - first < chunk_atoms) ++last;
    compute_chunk(owned_sorted.data() + first, last - first);
    first = last;
  }
}

/* ----------------------------------------------------------------------
   energies, forces and virials of the owned atoms `own` [n_own]: the package sees only
   the atoms they depend on (their receptive field and its neighbours), renumbered
------------------------------------------------------------------------- */

void PairNearsight::compute_chunk(const int *own, int n_own)
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;

  // edges: every ordered pair closer than the cutoff around the atoms some layer updates. A one-layer
  // model needs only the owned atoms' environments. A model of T layers needs the features of layer
  // t only on atoms within T-1-t hops (edges) of an owned atom; a package that takes layer_centres
  // gets those atom lists (one layer: the owned atoms) and edges around the atoms within T-1 hops,
  // an older one of several layers edges around every atom
  const int layers = info->interaction_layers;
  const bool by_hops = info->layer_inputs == layers;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cutsq_model = cutoff * cutoff;
  auto within_cutoff = [&](int i, int j) {
    const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
    return dx * dx + dy * dy + dz * dz < cutsq_model;
  };
  std::vector<int> &centres = chunk_centres;
  if (by_hops) {
    depth.assign(nall, layers);
    std::vector<int> frontier(own, own + n_own);
    for (int i : frontier) depth[i] = 0;
    centres = frontier;
    for (int k = 0; k + 1 < layers; ++k) {
      std::vector<int> next;
      for (int i : frontier) {
        const int *jlist = firstneigh[i];
        for (int jj = 0; jj < numneigh[i]; ++jj) {
          const int j = jlist[jj] & NEIGHMASK;
          if (depth[j] > k + 1 && within_cutoff(i, j)) {
            depth[j] = k + 1;
            next.push_back(j);
          }
        }
      }
      centres.insert(centres.end(), next.begin(), next.end());
      frontier.swap(next);
    }
  } else if (layers > 1) {
    centres.assign(list->ilist, list->ilist + list->inum + list->gnum);
  } else {
    centres.assign(own, own + n_own);
  }

  // the atoms the package sees: the owned atoms of this chunk first, then every other centre
  // and neighbour, each once; atoms[k] is LAMMPS's index of the package's atom k
  atoms.clear();
  auto add = [&](int i) {
    if (local_of[i] < 0) {
      local_of[i] = static_cast<int>(atoms.size());
      atoms.push_back(i);
    }
  };
  for (int k = 0; k < n_own; ++k) add(own[k]);
  for (int i : centres) add(i);
  centre.clear();
  neighbour.clear();
  for (int i : centres) {
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      if (within_cutoff(i, j)) {
        add(j);
        centre.push_back(local_of[i]);
        neighbour.push_back(local_of[j]);
      }
    }
  }

  int64_t n = static_cast<int64_t>(atoms.size());
  pos.resize(3 * (n + 2));
  species.resize(n + 2);
  mask.resize(n + 2);
  double top[3] = {0.0, 0.0, 0.0};
  for (int64_t a = 0; a < n; ++a) {
    const int i = atoms[a];
    for (int k = 0; k < 3; ++k) {
      pos[3 * a + k] = x[i][k] - origin[k];
      top[k] = std::max(top[k], pos[3 * a + k]);
    }
    species[a] = type2z[type[i]];
    mask[a] = a < n_own ? 1 : 0;
  }
  layer_centres.assign(by_hops ? layers : 0, {});
  for (int t = 0; t < static_cast<int>(layer_centres.size()); ++t)
    for (int64_t a = 0; a < n; ++a)
      if (depth[atoms[a]] <= layers - 1 - t) layer_centres[t].push_back(a);

  // packages are exported with at least two atoms, two edges and two atoms per layer
  // (torch.export specialises sizes 0 and 1); pad with a pair of masked dummy atoms far
  // away, which only see each other and change nothing else
  if (n < 2 || centre.size() < 2 || (by_hops && n_own < 2)) {
    const double far = 10.0 * ghost_layers() * cutoff + 100.0;
    for (int d = 0; d < 2; ++d) {
      for (int k = 0; k < 3; ++k) pos[3 * (n + d) + k] = top[k] + far;
      pos[3 * (n + d)] += 0.5 * d * cutoff;
      species[n + d] = info->species[0];
      mask[n + d] = 0;
    }
    centre.push_back(n);
    neighbour.push_back(n + 1);
    centre.push_back(n + 1);
    neighbour.push_back(n);
    for (auto &c : layer_centres) {
      c.push_back(n);
      c.push_back(n + 1);
    }
    n += 2;
  }

  const int64_t nedges = static_cast<int64_t>(centre.size());
  edge_index.resize(2 * nedges);
  std::copy(centre.begin(), centre.end(), edge_index.begin());
  std::copy(neighbour.begin(), neighbour.end(), edge_index.begin() + nedges);

  // cell rows are the lattice vectors; shifts are zero because ghosts carry image coordinates
  const double *h = domain->h;
  const double cell[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};

  try {
    model->compute(n, pos.data(), species.data(), cell, nedges, edge_index.data(), mask.data(), layer_centres,
                   vflag_atom != 0, *result);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style nearsight: evaluating {} on {} atoms and {} edges failed: {}", package_path,
               n, nedges, e.what());
  }

  const int64_t seen = static_cast<int64_t>(atoms.size());
  const double *fm = result->forces.data();
  for (int64_t a = 0; a < seen; ++a) {
    const int i = atoms[a];
    f[i][0] += fm[3 * a];
    f[i][1] += fm[3 * a + 1];
    f[i][2] += fm[3 * a + 2];
  }

  const double *e = result->atomic_energies.data();
  if (eflag_global)
    for (int a = 0; a < n_own; ++a) eng_vdwl += e[a];
  if (eflag_atom)
    for (int a = 0; a < n_own; ++a) eatom[atoms[a]] += e[a];

  // LAMMPS order xx, yy, zz, xy, xz, yz; W[a][b] = -sum r_a dE/dr_b
  if (vflag_global) {
    const double *w = result->virial;
    virial[0] += w[0];
    virial[1] += w[4];
    virial[2] += w[8];
    virial[3] += w[1];
    virial[4] += w[2];
    virial[5] += w[5];
  }
  if (vflag_atom) {
    for (int64_t a = 0; a < seen; ++a) {
      const double *w = result->atomic_virial.data() + 9 * a;
      const int i = atoms[a];
      vatom[i][0] += w[0];
      vatom[i][1] += w[4];
      vatom[i][2] += w[8];
      vatom[i][3] += w[1];
      vatom[i][4] += w[2];
      vatom[i][5] += w[5];
    }
  }
  for (int i : atoms) local_of[i] = -1;
}
