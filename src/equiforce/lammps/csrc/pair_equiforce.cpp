/* pair_style equiforce model.pt (Python callbacks) or model.pt2 (an exported package of a
   strictly local model, run in C++) / pair_coeff * * C H O (pair_equiforce.h, docs/lammps.md).

   Requires units metal and newton_pair on: forces on ghost atoms are summed into their owners
   by LAMMPS's reverse communication, and the global virial is sum_i x_i (x) f_i over local and
   ghost atoms (virial_fdotr_compute). Both paths (the Python callback, the package's
   edge_gradient output) give dE/dr_ij per edge back: f_i += it, f_j -= it, and the edge's
   virial -r_ij (x) dE/dr_ij goes half to each atom (stress/atom) and to the global virial when
   F.r is not used (pair_style hybrid). centroid/stress/atom (all 9 components) is the per-atom
   virial of the heat flux, W_j = sum_i (x_i - x_j) (x) dE_i/dx_j: for a strictly local model
   (E_i depends only on the edges centred at i: Allegro, every package) it is each edge's
   virial, all of it j's; a message-passing model's E_i depends on edges beyond i, so the
   callback computes W from the gradients of the energy moment sum_i x_i E_i
   (equiforce/lammps/domain.py), on a graph with one row per copy of an atom, for the steps
   that ask for it. Types mapped to NULL (hybrid) are in no edge and count no energy. */
#include "pair_equiforce.h"

#ifdef EQUIFORCE_AOTI
#include "aoti_model.h"

#include <dlfcn.h>
#endif

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "lammps.h"
#include "lammpsplugin.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <exception>
#include <string>

using namespace LAMMPS_NS;

namespace {
equiforce_callbacks_t callbacks = {nullptr, nullptr, nullptr};
constexpr int kChunk = 32;    // columns per halo message (comm buffers are sized for this)
constexpr int kErrLen = 4096;
}    // namespace

extern "C" void equiforce_set_callbacks(const equiforce_callbacks_t *source)
{
  callbacks = *source;
}

extern "C" void equiforce_mpi_abort(int code)
{
  MPI_Abort(MPI_COMM_WORLD, code);
}

extern "C" void equiforce_exchange(void *pair, double *rows, int width, int reverse)
{
  static_cast<PairEquiforce *>(pair)->exchange(rows, width, reverse);
}

extern "C" void equiforce_barrier(void *pair)
{
  static_cast<PairEquiforce *>(pair)->barrier();
}

PairEquiforce::PairEquiforce(LAMMPS *lmp) :
    Pair(lmp), handle(-1), r_max(0.0), strictly_local(true), halo_rows(nullptr), halo_width(0),
    halo_first(0)
{
  single_enable = 0;
  centroidstressflag = CENTROID_AVAIL;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  comm_forward = kChunk;
  comm_reverse = kChunk;
}

PairEquiforce::~PairEquiforce()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairEquiforce::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

void PairEquiforce::settings(int narg, char **arg)
{
  if (narg < 1)
    error->all(FLERR,
               "Illegal pair_style equiforce command: pair_style equiforce MODEL [charge Q] [spin S]");
  package.reset();
  strictly_local = true;    // a package: load_package refuses any other
  if (utils::strmatch(arg[0], "\\.pt2$")) {
    if (narg != 1)
      error->all(FLERR, "pair_style equiforce PACKAGE.pt2 takes no keywords (charge and spin: "
                        "a model file, run through equiforce lammps)");
    load_package(arg[0]);
  } else {
    if (callbacks.load == nullptr)
      error->all(FLERR,
                 "pair_style equiforce runs inside the equiforce driver: equiforce lammps in.lmp");
    std::string settings = arg[0];    // the model, then its keywords (the driver parses them)
    for (int i = 1; i < narg; i++) settings += std::string(" ") + arg[i];
    char err[kErrLen] = "";
    int local = 0;
    if (callbacks.load(settings.c_str(), &handle, &r_max, &local, err, kErrLen) != 0)
      error->all(FLERR, err);
    strictly_local = local != 0;
  }
}

#ifdef EQUIFORCE_AOTI
/* equiforce_open_aoti_model of `<this plugin>.aoti.so` (aoti_model.h: why a library of its own,
   opened deep-bound), opened on the first package; null with `error` set if it cannot be. */
static equiforce::OpenAotiModel open_aoti_model(std::string &error)
{
  static equiforce::OpenAotiModel open = nullptr;
  if (open != nullptr) return open;
  Dl_info self;
  if (dladdr(reinterpret_cast<void *>(&open_aoti_model), &self) == 0 || !self.dli_fname) {
    error = "cannot locate the plugin's own file (dladdr)";
    return nullptr;
  }
  std::string library = self.dli_fname;
  library = library.substr(0, library.size() - 3) + ".aoti.so";    // pair_equiforce_<hash>.so
  void *handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (handle == nullptr) {
    error = "cannot load " + library + " (built with the plugin): " + dlerror();
    return nullptr;
  }
  open = reinterpret_cast<equiforce::OpenAotiModel>(dlsym(handle, equiforce::kOpenAotiModel));
  if (open == nullptr) error = library + " has no " + equiforce::kOpenAotiModel;
  return open;
}

void PairEquiforce::load_package(const char *path)
{
  std::string reason;
  equiforce::OpenAotiModel open = open_aoti_model(reason);
  if (open == nullptr) error->all(FLERR, "pair_style equiforce {}: {}", path, reason);
  char err[kErrLen] = "";
  package.reset(open(path, err, kErrLen));
  if (!package) error->all(FLERR, err);
  r_max = package->r_max();
}

void PairEquiforce::map_package_types(const std::vector<const char *> &elements)
{
  for (size_t i = 1; i <= elements.size(); i++) {
    if (strcmp(elements[i - 1], "NULL") == 0) continue;    // not the model's (hybrid): -1
    type_map[i] = package->type_index(elements[i - 1]);
    if (type_map[i] < 0) {
      std::string known;
      for (const auto &name : package->type_names()) known += " " + name;
      error->all(FLERR, "pair_coeff maps atom type {} to {}, which the model does not know "
                 "(its elements:{})", i, elements[i - 1], known);
    }
  }
}

double PairEquiforce::compute_package(int n_local, int n_all)
{
  try {
    equiforce::Domain domain{n_local, n_all, n_all ? atom->x[0] : nullptr, model_types.data(),
                             (int) centre.size(), centre.data(), neighbour.data()};
    return package->compute(domain, pair_gradient.data(), eflag_atom ? eatom : nullptr);
  } catch (const std::exception &err) {
    error->one(FLERR, "rank {} of {}: {}", comm->me, comm->nprocs, err.what());
  }
  return 0.0;
}
#else
void PairEquiforce::load_package(const char *path)
{
  error->all(FLERR, "pair_style equiforce {}: this plugin was built without libtorch, which a "
             ".pt2 package needs (torch's C++ headers were not found at build time)", path);
}

// never called: without libtorch `package` stays null
void PairEquiforce::map_package_types(const std::vector<const char *> &) {}

double PairEquiforce::compute_package(int, int) { return 0.0; }
#endif

void PairEquiforce::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  int n_types = atom->ntypes;
  if (narg != 2 + n_types || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR,
               "pair_coeff for equiforce is 'pair_coeff * * ELEMENT...' with one element per "
               "atom type: {} types, {} elements given",
               n_types, std::max(0, narg - 2));
  std::vector<const char *> elements(arg + 2, arg + narg);
  type_map.assign(n_types + 1, -1);
  if (package) {
    map_package_types(elements);
  } else {
    char err[kErrLen] = "";
    if (callbacks.map_types(handle, n_types, elements.data(), type_map.data() + 1, err, kErrLen))
      error->all(FLERR, err);
  }
  for (int i = 1; i <= n_types; i++)
    for (int j = i; j <= n_types; j++) setflag[i][j] = type_map[i] >= 0 && type_map[j] >= 0;
}

void PairEquiforce::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style equiforce needs 'units metal' (eV, Å, ps); the input has 'units {}'",
               update->unit_style);
  if (force->newton_pair == 0) error->all(FLERR, "pair_style equiforce needs 'newton on'");
  check_every_pair_listed();
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

void PairEquiforce::check_every_pair_listed()
{
  if (neighbor->nex_type || neighbor->nex_group || neighbor->nex_mol)    // set by neigh_modify
    error->all(FLERR, "pair_style equiforce needs every pair within r_max = {} Å in its "
               "neighbour list; 'neigh_modify exclude' removes some (a type mapped to NULL "
               "under pair_style hybrid leaves those atoms out instead)", r_max);
  if (atom->molecular == Atom::ATOMIC || atom->nbonds == 0) return;
  for (int k = 1; k <= 3; k++)
    if (force->special_lj[k] != 1.0 || force->special_coul[k] != 1.0)
      error->all(FLERR, "pair_style equiforce needs every pair within r_max = {} Å; the data "
                 "has bonds and special_bonds weights 1-{} pairs by lj {} coul {}, which "
                 "drops or marks them in the neighbour list: use 'special_bonds lj/coul 1.0 "
                 "1.0 1.0' (and pair_modify pair STYLE special for other hybrid sub-styles)",
                 r_max, k + 1, force->special_lj[k], force->special_coul[k]);
}

double PairEquiforce::init_one(int i, int j)
{
  if (setflag[i][j] == 0)
    error->all(FLERR, "pair_style equiforce: atom types {} and {} have no element "
               "(pair_coeff * * ELEMENT...; a type mapped to NULL needs pair_style hybrid)",
               i, j);
  return r_max;
}

void PairEquiforce::build_edges()
{
  double **x = atom->x;
  double r_max_sq = r_max * r_max;
  centre.clear();
  neighbour.clear();
  edge_vec.clear();
  for (int ii = 0; ii < list->inum; ii++) {
    int i = list->ilist[ii];
    if (model_types[i] < 0) continue;
    int *neighbours = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      int j = neighbours[jj] & NEIGHMASK;
      double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < r_max_sq && model_types[j] >= 0) {
        centre.push_back(i);
        neighbour.push_back(j);
        edge_vec.insert(edge_vec.end(), {dx, dy, dz});
      }
    }
  }
}

void PairEquiforce::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  int n_local = atom->nlocal, n_all = atom->nlocal + atom->nghost;
  model_types.resize(n_all);
  for (int i = 0; i < n_all; i++) model_types[i] = type_map[atom->type[i]];
  build_edges();
  int n_edges = (int) centre.size();
  pair_gradient.resize(3 * (size_t) n_edges);    // the model writes every entry
  double energy = package ? compute_package(n_local, n_all) : compute_callback(n_local);
  apply_pair_gradient();
  if (eflag_global) eng_vdwl += energy;
  if (vflag_fdotr) virial_fdotr_compute();
}

double PairEquiforce::compute_callback(int n_local)
{
  double energy = 0.0;
  char err[kErrLen] = "";
  int n_edges = (int) centre.size();
  // a message-passing model's heat-flux virials: one row per copy, so rows are LAMMPS atoms
  bool centroid = cvflag_atom && !strictly_local;
  assign_rows(centroid);
  neighbour_row.resize(n_edges);
  for (int e = 0; e < n_edges; e++) neighbour_row[e] = row[neighbour[e]];
  // a rank without atoms still calls the model: its halo exchanges are collective
  int n_rows = (int) row_atom.size();
  centroid_rows.assign(centroid ? 9 * (size_t) std::max(n_rows, 1) : 0, 0.0);    // non-null
  const double *x = centroid && n_rows ? atom->x[0] : nullptr;
  int status = callbacks.compute(handle, this, n_local, n_rows - n_local, row_types.data(),
                                 n_edges, centre.data(), neighbour_row.data(), edge_vec.data(), x,
                                 pair_gradient.data(), eflag_atom ? eatom : nullptr,
                                 centroid ? centroid_rows.data() : nullptr, &energy, err, kErrLen);
  if (status != 0) error->one(FLERR, err);
  for (int r = 0; centroid && r < n_rows; r++)
    for (int c = 0; c < 9; c++) cvatom[row_atom[r]][c] += centroid_rows[9 * (size_t) r + c];
  return energy;
}

void PairEquiforce::assign_rows(bool per_copy)
{
  int n_local = atom->nlocal, n_all = atom->nlocal + atom->nghost;
  row.resize(n_all);
  row_atom.resize(n_local);
  for (int i = 0; i < n_local; i++) row[i] = row_atom[i] = i;
  if (atom->tag_enable && !per_copy) {    // atoms with IDs: one row per ID
    row_of.clear();    // keeps its buckets from the last call
    row_of.reserve(n_all);
    for (int i = 0; i < n_local; i++) row_of.emplace(atom->tag[i], i);
    for (int j = n_local; j < n_all; j++) {
      auto found = row_of.emplace(atom->tag[j], (int) row_atom.size());
      if (found.second) row_atom.push_back(j);
      row[j] = found.first->second;
    }
  } else {
    for (int j = n_local; j < n_all; j++) {
      row[j] = j;
      row_atom.push_back(j);
    }
  }
  row_types.resize(row_atom.size());
  for (size_t r = 0; r < row_atom.size(); r++) row_types[r] = model_types[row_atom[r]];
}

void PairEquiforce::apply_pair_gradient()
{
  double **f = atom->f;
  int n_local = atom->nlocal;
  for (size_t e = 0; e < centre.size(); e++) {
    int i = centre[e], j = neighbour[e];
    const double *g = &pair_gradient[3 * e], *r = &edge_vec[3 * e];
    for (int k = 0; k < 3; k++) {
      f[i][k] += g[k];
      f[j][k] -= g[k];
    }
    // the force on i is g, x_i - x_j = -r_ij: virial -r_ij (x) g, half to i and half to j
    if (vflag_either)
      ev_tally_xyz(i, j, n_local, 1, 0.0, 0.0, g[0], g[1], g[2], -r[0], -r[1], -r[2]);
    // a strictly local model's: all of it to j (file docstring), in LAMMPS's order xx yy zz
    // xy xz yz yx zx zy (a message-passing model's come from the callback)
    if (cvflag_atom && strictly_local) {
      static constexpr int a[9] = {0, 1, 2, 0, 0, 1, 1, 2, 2}, b[9] = {0, 1, 2, 1, 2, 2, 0, 0, 1};
      for (int c = 0; c < 9; c++) cvatom[j][c] -= r[a[c]] * g[b[c]];
    }
  }
}

void PairEquiforce::exchange(double *rows, int width, int reverse)
{
  halo_rows = rows;
  halo_width = width;
  for (halo_first = 0; halo_first < width; halo_first += kChunk) {
    int size = std::min(kChunk, width - halo_first);
    if (reverse)
      comm->reverse_comm(this, size);
    else
      comm->forward_comm(this, size);
  }
  halo_rows = nullptr;
}

void PairEquiforce::barrier()
{
  MPI_Barrier(world);
}

// Halo rows are indexed by `row`: copies of one atom share a row. Forward: every copy reads
// and writes its atom's row (the same owner value). Reverse: only the first copy of a ghost
// atom sends its row (it holds the gradients of all copies, and is the last of them to be
// sent: reverse communication runs the swaps backwards); other copies, and images of local
// atoms, send zeros.
int PairEquiforce::pack_forward_comm(int n, int *list_, double *buf, int, int *)
{
  int size = std::min(kChunk, halo_width - halo_first), m = 0;
  for (int i = 0; i < n; i++) {
    const double *values = halo_rows + (size_t) row[list_[i]] * halo_width + halo_first;
    for (int c = 0; c < size; c++) buf[m++] = values[c];
  }
  return m;
}

void PairEquiforce::unpack_forward_comm(int n, int first, double *buf)
{
  int size = std::min(kChunk, halo_width - halo_first), m = 0;
  for (int i = first; i < first + n; i++) {
    double *values = halo_rows + (size_t) row[i] * halo_width + halo_first;
    for (int c = 0; c < size; c++) values[c] = buf[m++];
  }
}

int PairEquiforce::pack_reverse_comm(int n, int first, double *buf)
{
  int size = std::min(kChunk, halo_width - halo_first), m = 0;
  for (int i = first; i < first + n; i++) {
    int r = row[i];
    if (row_atom[r] != i) {
      for (int c = 0; c < size; c++) buf[m++] = 0.0;
      continue;
    }
    const double *values = halo_rows + (size_t) r * halo_width + halo_first;
    for (int c = 0; c < size; c++) buf[m++] = values[c];
  }
  return m;
}

void PairEquiforce::unpack_reverse_comm(int n, int *list_, double *buf)
{
  int size = std::min(kChunk, halo_width - halo_first), m = 0;
  for (int i = 0; i < n; i++) {
    double *values = halo_rows + (size_t) row[list_[i]] * halo_width + halo_first;
    for (int c = 0; c < size; c++) values[c] += buf[m++];
  }
}

static Pair *create_pair(LAMMPS *lmp)
{
  return new PairEquiforce(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = static_cast<LAMMPS *>(lmp)->version;    // the build is keyed by version
  plugin.style = "pair";
  plugin.name = "equiforce";
  plugin.info = "equiforce pair style (E(3)-equivariant ML potentials: model files through Python, "
                "strictly local .pt2 packages in C++)";
  plugin.author = "equiforce";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
