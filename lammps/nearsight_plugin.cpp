/* Registers pair_style nearsight with LAMMPS when the shared object is loaded with
   "plugin load nearsightplugin.so" (or found on LAMMPS_PLUGIN_PATH). */

#include "lammpsplugin.h"
#include "pair_nearsight.h"

#ifndef NEARSIGHT_LAMMPS_VERSION
#define NEARSIGHT_LAMMPS_VERSION nullptr
#endif

using namespace LAMMPS_NS;

static Pair *create_pair_nearsight(LAMMPS *lmp)
{
  return new PairNearsight(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t record;
  record.version = NEARSIGHT_LAMMPS_VERSION;
  record.style = "pair";
  record.name = "nearsight";
  record.info = "nearsight machine-learning potential (torch AOTInductor package)";
  record.author = "the nearsight developers";
  record.creator.v1 = (lammpsplugin_factory1 *) &create_pair_nearsight;
  record.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&record, lmp);
}
