/* PackageModel, the AotiModel of aoti_model.h: an exported package run by libtorch's
   AOTIModelPackageLoader, built into its own shared object (`<plugin>.aoti.so`) with the entry
   point equiforce_open_aoti_model.

   The package's program is the one the Python loader runs (docs/export.md): inputs, in the
   order of its `inputs` metadata, atom_type (n,) int64, batch (n,) int64 zeros, cell (1,3,3)
   float64, edge_index (2,E) int64 [centre, neighbour], edge_shift (E,3) float64, pos (n,3)
   float64 Å, ptr (2,) int64 [0, n]; outputs energy (1,), forces (n,3), node_energy (n,),
   edge_gradient (E,3), all float64. A rank's domain is one "structure" of local + ghost atoms
   without a cell (ghosts are explicit periodic images: zero shifts), its edges centred on local
   atoms. A ghost is the centre of no edge, so its energy E_g is a per-species constant and the
   package's edge gradients d(sum_all E_i)/dr_ij equal d(sum_local E_i)/dr_ij; the local
   energy is summed from node_energy.
   A domain with fewer than 2 atoms or 2 edges (the exported axes start at 2) gets two padding
   atoms joined by two edges of their own: they touch no real atom's energy and are dropped.
   Atoms of types mapped to NULL (pair_style hybrid) enter as type 0 without edges; their
   constant energies are left out. A package whose program calls equiforce's kernel library
   (Allegro's tensor product and tensor track, `fast` backend) carries it; it is loaded before
   the program (equiforce/export/csrc/package_reader.h: the metadata and checks every C++
   consumer shares). */
#include "aoti_model.h"

#include "package_reader.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace equiforce {

namespace {

/* Refuse a package the pair style cannot run: a model that passes messages, no per-atom
   energies or edge gradients (the torch release, format and CPU are PackageReader's). */
void check_runnable(const PackageReader &package)
{
  const std::string &path = package.path();
  std::string family = package.string_field("family");
  if (package.field("strictly_local") != "true") {
    std::string count = package.has("message_passing_layers")
                            ? " (" + package.field("message_passing_layers") + " layers)"
                            : "";
    fail(path, "this " + family + " package is not strictly local: its model passes messages "
                   "between atoms" + count + ", which needs a halo exchange between layers on "
                   "every MPI rank, and a package runs as one program. Run the model file "
                   "instead (pair_style equiforce model.pt under `equiforce lammps`: the "
                   "Python-callback path, which exchanges per layer); packages run in C++ for "
                   "strictly local models (Allegro)");
  }
  auto outputs = package.strings_field("outputs");
  for (const char *name : {"node_energy", "edge_gradient"})
    if (std::find(outputs.begin(), outputs.end(), name) == outputs.end())
      fail(path, std::string("the package has no '") + name + "' output (its outputs: " +
                     joined(outputs) + "); LAMMPS needs the per-atom energies and the edge "
                     "gradients of local atoms: equiforce export MODEL OUT.pt2 --per-atom (with "
                     "this equiforce: packages before edge_gradient lack it)");
}

size_t index_of(const std::vector<std::string> &names, const std::string &name)
{
  return std::find(names.begin(), names.end(), name) - names.begin();
}

}    // namespace

class PackageModel final : public AotiModel {
 public:
  explicit PackageModel(const std::string &path);

  double r_max() const override { return r_max_; }
  long long max_atoms() const override { return max_atoms_; }
  const std::vector<std::string> &type_names() const override { return type_names_; }
  int type_index(const std::string &element) const override;
  double compute(const Domain &domain, double *pair_gradient, double *eatom) override;

 private:
  std::string path_;
  double r_max_;
  long long max_atoms_;
  std::vector<std::string> type_names_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  std::vector<std::string> inputs_;
  size_t edge_gradient_, node_energy_;    // output positions
  c10::Device device_{c10::kCPU};
};

PackageModel::PackageModel(const std::string &path) : path_(path), r_max_(0.0), max_atoms_(-1)
{
  PackageReader package(path, "this plugin");
  check_runnable(package);
  r_max_ = package.number_field("r_max");
  max_atoms_ = package.integer_field("max_atoms", -1);    // absent before --max-atoms existed
  type_names_ = package.strings_field("type_names");
  inputs_ = package.strings_field("inputs");
  for (const auto &name : inputs_)
    if (name != "atom_type" && name != "batch" && name != "cell" && name != "edge_index" &&
        name != "edge_shift" && name != "pos" && name != "ptr")
      fail(path, "the package takes an input '" + name + "' that this plugin cannot provide");
  auto outputs = package.strings_field("outputs");
  edge_gradient_ = index_of(outputs, "edge_gradient");
  node_energy_ = index_of(outputs, "node_energy");
  device_ = c10::Device(package.string_field("device") == "cuda" ? c10::kCUDA : c10::kCPU);
  loader_ = package.load_program();
}

int PackageModel::type_index(const std::string &element) const
{
  size_t index = index_of(type_names_, element);
  return index < type_names_.size() ? static_cast<int>(index) : -1;
}

double PackageModel::compute(const Domain &domain, double *pair_gradient, double *eatom)
{
  const bool pad = domain.n_all < 2 || domain.n_edges < 2;
  const int64_t n = domain.n_all + (pad ? 2 : 0), n_edges = domain.n_edges + (pad ? 2 : 0);
  if (max_atoms_ >= 0 && n > max_atoms_)
    fail(path_, std::to_string(domain.n_local) + " local + " +
                    std::to_string(domain.n_all - domain.n_local) + " ghost atoms" +
                    (pad ? " + 2 padding atoms" : "") + " = " + std::to_string(n) +
                    " atoms on this rank, more than the " + std::to_string(max_atoms_) +
                    " the package was exported for (equiforce export --max-atoms " +
                    std::to_string(max_atoms_) + "): export it again with a larger "
                    "--max-atoms, or run on more MPI ranks");
  c10::InferenceMode guard;
  auto options = at::TensorOptions().dtype(at::kDouble);
  at::Tensor pos = at::empty({n, 3}, options);
  at::Tensor atom_type = at::empty({n}, options.dtype(at::kLong));
  at::Tensor edge_index = at::empty({2, n_edges}, options.dtype(at::kLong));
  double *p = pos.data_ptr<double>();
  int64_t *t = atom_type.data_ptr<int64_t>(), *e = edge_index.data_ptr<int64_t>();
  if (domain.n_all > 0) std::memcpy(p, domain.x, sizeof(double) * 3 * domain.n_all);
  for (int i = 0; i < domain.n_all; i++) t[i] = std::max(domain.types[i], 0);
  for (int k = 0; k < domain.n_edges; k++) {
    e[k] = domain.centre[k];
    e[n_edges + k] = domain.neighbour[k];
  }
  if (pad) {    // atoms a, b = n-2, n-1 of type 0, r_max / 2 apart; edges a->b, b->a
    const int64_t a = n - 2, b = n - 1;
    for (int c = 0; c < 3; c++) p[3 * a + c] = p[3 * b + c] = 0.0;
    p[3 * b] = 0.5 * r_max_;
    t[a] = t[b] = 0;
    e[n_edges - 2] = a, e[2 * n_edges - 2] = b;
    e[n_edges - 1] = b, e[2 * n_edges - 1] = a;
  }
  std::vector<at::Tensor> inputs;
  for (const auto &name : inputs_) {
    at::Tensor value;
    if (name == "pos") value = pos;
    else if (name == "atom_type") value = atom_type;
    else if (name == "edge_index") value = edge_index;
    else if (name == "batch") value = at::zeros({n}, options.dtype(at::kLong));
    else if (name == "cell") value = at::zeros({1, 3, 3}, options);
    else if (name == "edge_shift") value = at::zeros({n_edges, 3}, options);
    else value = at::tensor({int64_t(0), n}, options.dtype(at::kLong));    // ptr
    inputs.push_back(value.to(device_));
  }
  std::vector<at::Tensor> outputs;
  try {
    outputs = loader_->run(inputs);
  } catch (const std::exception &err) {
    fail(path_, std::string("the package failed on ") + std::to_string(domain.n_local) +
                    " local, " + std::to_string(domain.n_all - domain.n_local) + " ghost atoms, " +
                    std::to_string(domain.n_edges) + " edges: " + err.what());
  }
  at::Tensor gradient = outputs.at(edge_gradient_).to(at::kCPU, at::kDouble).contiguous();
  at::Tensor node_energy =
      outputs.at(node_energy_).to(at::kCPU, at::kDouble).contiguous();
  const double *en = node_energy.data_ptr<double>();
  if (domain.n_edges > 0)    // the padding edges come last
    std::memcpy(pair_gradient, gradient.data_ptr<double>(), sizeof(double) * 3 * domain.n_edges);
  double energy = 0.0;
  for (int i = 0; i < domain.n_local; i++) {
    if (domain.types[i] < 0) continue;
    energy += en[i];
    if (eatom) eatom[i] += en[i];
  }
  return energy;
}

}    // namespace equiforce

extern "C" equiforce::AotiModel *equiforce_open_aoti_model(const char *path, char *error,
                                                            int error_len)
{
  try {
    return new equiforce::PackageModel(path);
  } catch (const std::exception &err) {
    std::snprintf(error, error_len, "%s", err.what());
  }
  return nullptr;
}
