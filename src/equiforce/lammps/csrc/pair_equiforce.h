/* pair_style equiforce MODEL: an equiforce model file (.pt, any family) evaluated in Python,
   called through C callbacks that the `equiforce lammps` driver registers
   (equiforce/lammps/driver.py); or, for MODEL ending in .pt2, an exported package of a strictly
   local model run in C++ by libtorch (aoti_model.h; needs the plugin built with libtorch,
   EQUIFORCE_AOTI), with no Python in the loop and no driver needed. */
#ifndef EQUIFORCE_PAIR_EQUIFORCE_H
#define EQUIFORCE_PAIR_EQUIFORCE_H

#include "pair.h"

#include <memory>
#include <unordered_map>
#include <vector>

extern "C" {

/* Callbacks into the driver. Each returns 0 on success; on failure it writes a message
   (at most `errlen` bytes, NUL-terminated) into `err`. Units: Å, eV, eV/Å. */
typedef struct {
  /* load the model `settings` name ("PATH [charge Q] [spin S]", pair_style's words joined):
     its handle, cutoff r_max (Å) and whether it is strictly local (1: E_i depends only on the
     edges centred at i; 0: message passing) */
  int (*load)(const char *settings, int *handle, double *r_max, int *strictly_local, char *err,
              int errlen);
  /* model type index (0-based) of each of `n_types` element symbols */
  int (*map_types)(int handle, int n_types, const char **elements, int *model_types, char *err,
                   int errlen);
  /* energies of the local atoms and dE/dr_ij of the edges: model_types (n_all,) of the local
     then the ghost rows (-1: a type mapped to NULL, in no edge), edges centre -> neighbour
     (n_edges,) with centre < n_local and rij (n_edges, 3) = x_j - x_i; writes dE/dr_ij to
     pair_gradient (n_edges, 3), adds E_i to eatom (n_local,) when eatom is not NULL and writes
     the sum of the local E_i to *energy. When x is not NULL, every row is one LAMMPS atom (each
     ghost copy a row of its own) at x (n_all, 3), and the callback also writes each row's share
     of its heat-flux virial to centroid_virial (n_all, 9, LAMMPS's order xx yy zz xy xz yz yx
     zx zy; ghost rows' shares belong to their owners). `pair` is passed back to
     equiforce_exchange. */
  int (*compute)(int handle, void *pair, int n_local, int n_ghost, const int *model_types,
                 int n_edges, const int *centre, const int *neighbour, const double *rij,
                 const double *x, double *pair_gradient, double *eatom,
                 double *centroid_virial, double *energy, char *err, int errlen);
} equiforce_callbacks_t;

void equiforce_set_callbacks(const equiforce_callbacks_t *callbacks);

/* Halo exchange of a row-major (n_all, width) float64 array during `compute`: forward
   (reverse == 0) copies each owned row into its ghost copies; reverse adds each ghost row
   into its owner's row. Collective over all ranks. */
void equiforce_exchange(void *pair, double *rows, int width, int reverse);

/* End every rank (MPI_Abort on MPI_COMM_WORLD): after an error on some ranks only, whose
   peers would otherwise wait in a collective forever. */
void equiforce_mpi_abort(int code);

/* MPI_Barrier on the pair style's communicator, during `compute`: the driver's timing
   (run_lammps(timing=True)) measures the wait for the slowest rank with it. */
void equiforce_barrier(void *pair);
}

namespace equiforce {
class AotiModel;
}

namespace LAMMPS_NS {

class PairEquiforce : public Pair {
 public:
  PairEquiforce(class LAMMPS *);
  ~PairEquiforce() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  void exchange(double *rows, int width, int reverse);
  void barrier();

 protected:
  void allocate();
  // neigh_modify exclude, or special_bonds below 1 with bonds, would silently drop edges
  void check_every_pair_listed();
  void build_edges();
  void apply_pair_gradient();
  // one row per atom ID, or per copy (every LAMMPS atom a row: the heat-flux virials need it)
  void assign_rows(bool per_copy);
  void load_package(const char *path);
  void map_package_types(const std::vector<const char *> &elements);
  // the model's energy of the local atoms (eV); each writes pair_gradient and eatom, and the
  // callback the message-passing model's heat-flux virials (cvatom) when they are asked for
  double compute_callback(int n_local);
  double compute_package(int n_local, int n_all);

  // a .pt2 model; null: the Python path (shared_ptr: a plugin built without libtorch never
  // creates one and so needs no AotiModel code)
  std::shared_ptr<equiforce::AotiModel> package;
  int handle;
  double r_max;
  bool strictly_local;    // E_i depends only on the edges centred at i (any package)
  std::vector<int> type_map;    // LAMMPS type (1-based) -> model type index
  std::vector<int> model_types;    // (n_all,) per compute
  std::vector<int> centre, neighbour;    // edges within r_max, per compute
  std::vector<double> edge_vec, pair_gradient;    // (n_edges, 3): x_j - x_i and dE/dr_ij
  // the model's graph has one row per atom (not per copy): local atoms keep their index,
  // the copies of a ghost atom share the row of its first copy, and periodic images of a
  // local atom share their owner's row (Python path only); with the heat-flux virials of a
  // message-passing model, one row per copy
  std::vector<int> row;    // (n_all,) LAMMPS atom -> row
  std::vector<int> row_atom;    // (n_rows,) the LAMMPS atom first holding each row
  std::vector<int> row_types, neighbour_row;    // (n_rows,) model types; (n_edges,) rows
  std::unordered_map<tagint, int> row_of;    // atom ID -> row, per compute
  std::vector<double> centroid_rows;    // (n_rows, 9) the callback's heat-flux virials
  // the array being exchanged: `halo_rows` (n_rows, halo_width), columns [halo_first,
  // halo_first + comm size) in the current message
  double *halo_rows;
  int halo_width, halo_first;
};

}    // namespace LAMMPS_NS

#endif
