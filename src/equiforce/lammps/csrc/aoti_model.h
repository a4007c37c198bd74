/* An exported equiforce package (`equiforce export --per-atom`, a .pt2 AOTInductor archive) run
   in C++ through libtorch's AOTIModelPackageLoader: no Python in the loop (docs/lammps.md,
   "Python-free Allegro"). Only strictly local models (Allegro) are accepted: atom i's energy
   depends on the edges centred at i alone, so one rank's local atoms, their ghosts out to r_max
   and the edges centred on local atoms give the local energies exactly, with no exchange.

   This header has no torch types (aoti_model.cpp holds them), so the LAMMPS side compiles
   without libtorch's headers and links without libtorch. Units: Å, eV, eV/Å. */
#ifndef EQUIFORCE_AOTI_MODEL_H
#define EQUIFORCE_AOTI_MODEL_H

#include <string>
#include <vector>

namespace equiforce {

/* One rank's atoms and edges, as LAMMPS holds them (pointers, not copied here). */
struct Domain {
  int n_local;    // local atoms, first in `x` and `types`
  int n_all;    // local + ghost atoms
  const double *x;    // (n_all, 3) positions, Å
  const int *types;    // (n_all,) model type indices (0-based, the package's type_names); -1: an
                       // atom the model does not see (a type mapped to NULL): no edges, no energy
  int n_edges;
  const int *centre;    // (n_edges,) local atoms
  const int *neighbour;    // (n_edges,) local or ghost atoms, |x_j - x_i| < r_max
};

/* The interface the plugin sees. The implementation (aoti_model.cpp) is its own shared object,
   `<plugin>.aoti.so` beside the plugin (equiforce/lammps/build.py), linked to libtorch and
   opened by the plugin with RTLD_DEEPBIND (pair_equiforce.cpp, open_package): a plain `lmp`
   holds liblammps.so, whose bundled reference BLAS exports `dgemm_`, in the global scope, and
   libtorch linked into the plugin bound its float64 matrix products to it (61% of a float64
   package's step); opened deep-bound, libtorch binds its own. */
class AotiModel {
 public:
  virtual ~AotiModel() = default;

  virtual double r_max() const = 0;
  /* the most atoms (local + ghost) one call takes (`equiforce export --max-atoms`, the upper
     bound of the program's atom axis); -1: unbounded */
  virtual long long max_atoms() const = 0;
  virtual const std::vector<std::string> &type_names() const = 0;
  /* model type index of an element symbol, -1 if the model lacks it */
  virtual int type_index(const std::string &element) const = 0;

  /* Writes dE/dr_ij of the local energy E = sum_{i local} E_i for every edge into
     pair_gradient (n_edges, 3; eV/Å, r_ij = x_j - x_i), adds E_i to eatom (n_local,) when
     eatom is not null, and returns E (eV): what the Python callback gives the pair style, which
     makes forces and (per-atom) virials of them alike for both paths. Throws
     std::runtime_error, also for a domain of more than max_atoms() atoms (padding included). */
  virtual double compute(const Domain &domain, double *pair_gradient, double *eatom) = 0;
};

/* The entry point of `<plugin>.aoti.so`, looked up by name (kOpenAotiModel): reads the package's
   metadata (the AOTInductor metadata strings `equiforce.<field>` that `equiforce export`
   writes), refuses what this path cannot run, then loads the compiled program. Returns the
   model (the caller deletes it), or null with a message naming the file and the reason in
   `error` (error_len bytes, NUL-terminated). */
using OpenAotiModel = AotiModel *(*) (const char *path, char *error, int error_len);
constexpr const char *kOpenAotiModel = "equiforce_open_aoti_model";

}    // namespace equiforce

extern "C" equiforce::AotiModel *equiforce_open_aoti_model(const char *path, char *error,
                                                            int error_len);

#endif
