// equiforce's C++ kernels as one library of dispatcher operators (TORCH_LIBRARY; no Python in
// it), called by eager equiforce as torch.ops.<namespace>.*.
//
// Traced operators: MACE's kernels (channelwise_tp.cpp, symmetric_contraction.cpp) and
// Allegro's tensor product and tensor track (allegro_product.cpp, allegro_tensor_track.cpp)
// have CPU and autograd kernels, all C++, so the
// same operators serve exported packages: torch.export traces them as opaque calls and
// AOTInductor's proxy executor calls them by name, once the library is loaded in the process
// (equiforce.export.package loads the copy a package carries). Every such operator's autograd
// kernel differentiates it with the library's operators (channelwise_tp_autograd.cpp,
// symmetric_contraction_autograd.cpp, allegro_product.cpp, allegro_tensor_track.cpp); their
// fake (meta) formulas are Python (edge_ops.py, symmetric_ops.py, allegro_product_ops.py,
// allegro_tensor_track.py), needed only to trace.
//
// Composite operators: Allegro's scalar MLPs and edge geometry (allegro_mlp.cpp,
// allegro_geometry.cpp) and split_cat.cpp's cat
// run eagerly only (C++ autograd Functions inside one CompositeImplicitAutograd kernel); a
// trace uses their torch formulations. So does bond_pairs (edge_pairs.cpp: integer work, a CPU
// kernel without derivatives).
//
// The namespace is EQF_OPS_NAMESPACE, defined at build time as the extension's name, which
// hashes the sources, flags, CPU and torch (kernels/extension.py): two builds that could differ
// never register one name twice.
//
// The edge operators take the whole EdgeGraph of edge_ops.py (so their autograd kernels see
// every index tensor) and pass each kernel the ones it reads.

#include <torch/library.h>
#include <torch/types.h>

#include <optional>
#include <tuple>

#ifndef EQF_OPS_NAMESPACE
#error "EQF_OPS_NAMESPACE must name the operator namespace"
#endif

// channelwise_tp.cpp
torch::Tensor node_out(torch::Tensor a, torch::Tensor s, torch::Tensor r, torch::Tensor gather,
                       torch::Tensor weight_row, torch::Tensor perm, torch::Tensor offsets,
                       torch::Tensor triples, int64_t n_out, int64_t d_out);
torch::Tensor edge_r(torch::Tensor a, torch::Tensor s, torch::Tensor b, torch::Tensor gather,
                     torch::Tensor other, torch::Tensor perm, torch::Tensor offsets,
                     torch::Tensor triples, int64_t n_paths);
torch::Tensor edge_s(torch::Tensor a, torch::Tensor r, torch::Tensor b, torch::Tensor gather,
                     torch::Tensor other, torch::Tensor weight_row, torch::Tensor triples);

// symmetric_contraction.cpp
torch::Tensor sc_forward(torch::Tensor p, torch::Tensor x, c10::optional<torch::Tensor> v,
                         torch::Tensor type, torch::Tensor pairs, torch::Tensor cubes,
                         torch::Tensor terms, int64_t n_out);
torch::Tensor sc_moment(torch::Tensor g, torch::Tensor x, c10::optional<torch::Tensor> v,
                        torch::Tensor type, torch::Tensor pairs, torch::Tensor cubes,
                        torch::Tensor terms, int64_t n_types);
torch::Tensor sc_gradient(torch::Tensor p, torch::Tensor g, torch::Tensor x,
                          c10::optional<torch::Tensor> v, torch::Tensor type,
                          torch::Tensor pairs, torch::Tensor cubes, torch::Tensor terms);

// allegro_product.cpp
torch::Tensor allegro_gather_contract(const torch::Tensor& x, const torch::Tensor& p,
                                      const torch::Tensor& centre);
torch::Tensor allegro_scatter_outer(const torch::Tensor& x, const torch::Tensor& y,
                                    const torch::Tensor& centre, c10::SymInt n_atoms);
torch::Tensor allegro_gather_contract_autograd(const torch::Tensor& x, const torch::Tensor& p,
                                               const torch::Tensor& centre);
torch::Tensor allegro_scatter_outer_autograd(const torch::Tensor& x, const torch::Tensor& y,
                                             const torch::Tensor& centre, c10::SymInt n_atoms);

// channelwise_tp_autograd.cpp
using Index = const torch::Tensor&;
torch::Tensor cwtp_node_out_autograd(const torch::Tensor& a, const torch::Tensor& s,
                                     const torch::Tensor& r, Index gather, Index other,
                                     Index perm_o, Index offsets_o, Index perm_g, Index offsets_g,
                                     Index weight_row, Index perm_w, Index offsets_w,
                                     Index triples, Index swapped, c10::SymInt n_out,
                                     c10::SymInt d_out);
torch::Tensor cwtp_edge_r_autograd(const torch::Tensor& a, const torch::Tensor& s,
                                   const torch::Tensor& b, Index gather, Index other,
                                   Index perm_o, Index offsets_o, Index perm_g, Index offsets_g,
                                   Index weight_row, Index perm_w, Index offsets_w, Index triples,
                                   Index swapped, c10::SymInt n_paths);
torch::Tensor cwtp_edge_s_autograd(const torch::Tensor& a, const torch::Tensor& r,
                                   const torch::Tensor& b, Index gather, Index other,
                                   Index perm_o, Index offsets_o, Index perm_g, Index offsets_g,
                                   Index weight_row, Index perm_w, Index offsets_w, Index triples,
                                   Index swapped);

// allegro_tensor_track.cpp
torch::Tensor allegro_weighted_channels(const torch::Tensor& basis, const torch::Tensor& w,
                                        const torch::Tensor& irrep_of, int64_t mul);
torch::Tensor allegro_environment(const torch::Tensor& basis, const torch::Tensor& w,
                                  const torch::Tensor& irrep_of, const torch::Tensor& centre,
                                  int64_t mul, c10::SymInt n_atoms);
std::tuple<torch::Tensor, torch::Tensor> allegro_weighting_backward(
    const torch::Tensor& g, const torch::Tensor& basis, const torch::Tensor& w,
    const torch::Tensor& irrep_of, const std::optional<torch::Tensor>& centre, int64_t mul);
torch::Tensor allegro_weighted_channels_autograd(const torch::Tensor& basis,
                                                 const torch::Tensor& w,
                                                 const torch::Tensor& irrep_of, int64_t mul);
torch::Tensor allegro_environment_autograd(const torch::Tensor& basis, const torch::Tensor& w,
                                           const torch::Tensor& irrep_of,
                                           const torch::Tensor& centre, int64_t mul,
                                           c10::SymInt n_atoms);
std::tuple<torch::Tensor, torch::Tensor> allegro_weighting_backward_autograd(
    const torch::Tensor& g, const torch::Tensor& basis, const torch::Tensor& w,
    const torch::Tensor& irrep_of, const std::optional<torch::Tensor>& centre, int64_t mul);

// allegro_mlp.cpp, allegro_geometry.cpp, split_cat.cpp: composite operators (below)
torch::Tensor allegro_scaled_mlp(at::TensorList blocks, at::TensorList weights,
                                 at::ArrayRef<double> alphas, bool silu, bool record);
std::tuple<torch::Tensor, torch::Tensor> allegro_geometry(
    const torch::Tensor& vec, const std::optional<torch::Tensor>& inverse,
    double inverse_uniform, int64_t n_basis, int64_t p, int64_t l_max, bool float64);
torch::Tensor split_cat(at::TensorList blocks, int64_t dim);

// edge_pairs.cpp
std::tuple<torch::Tensor, torch::Tensor> bond_pairs(const torch::Tensor& edge_index,
                                                    const torch::Tensor& edge_shift);

// symmetric_contraction_autograd.cpp
torch::Tensor sc_forward_autograd(const torch::Tensor& p, const torch::Tensor& x,
                                  const std::optional<torch::Tensor>& v, Index atom_type,
                                  Index pairs, Index cubes, Index terms, c10::SymInt n_out);
torch::Tensor sc_moment_autograd(const torch::Tensor& g, const torch::Tensor& x,
                                 const std::optional<torch::Tensor>& v, Index atom_type,
                                 Index pairs, Index cubes, Index terms, c10::SymInt n_types);
torch::Tensor sc_gradient_autograd(const torch::Tensor& p, const torch::Tensor& g,
                                   const torch::Tensor& x, const std::optional<torch::Tensor>& v,
                                   Index atom_type, Index pairs, Index cubes, Index terms);

namespace {

using torch::Tensor;

// Every kernel of an operator takes the arguments as the autograd kernel does (const
// references, SymInt): the dispatcher requires one C++ signature per operator.
using T = const Tensor&;

// dF/dB: out[o, ib, u] (n_out, d_out, U), edges by `other` (perm_o, offsets_o).
Tensor cwtp_node_out(T a, T s, T r, T gather, T other, T perm_o, T offsets_o, T perm_g,
                     T offsets_g, T weight_row, T perm_w, T offsets_w, T triples, T swapped,
                     c10::SymInt n_out, c10::SymInt d_out) {
  return node_out(a, s, r, gather, weight_row, perm_o, offsets_o, triples, n_out.expect_int(),
                  d_out.expect_int());
}

// dF/dR: out[w, p, u] (n_r, n_paths, U), edges by weight row (perm_w, offsets_w).
Tensor cwtp_edge_r(T a, T s, T b, T gather, T other, T perm_o, T offsets_o, T perm_g,
                   T offsets_g, T weight_row, T perm_w, T offsets_w, T triples, T swapped,
                   c10::SymInt n_paths) {
  return edge_r(a, s, b, gather, other, perm_w, offsets_w, triples, n_paths.expect_int());
}

// dF/dS: out[e, t] (n_edges, T).
Tensor cwtp_edge_s(T a, T r, T b, T gather, T other, T perm_o, T offsets_o, T perm_g,
                   T offsets_g, T weight_row, T perm_w, T offsets_w, T triples, T swapped) {
  return edge_s(a, r, b, gather, other, weight_row, triples);
}

Tensor sc_forward_cpu(T p, T x, const std::optional<Tensor>& v, T atom_type, T pairs, T cubes,
                      T terms, c10::SymInt n_out) {
  return sc_forward(p, x, v, atom_type, pairs, cubes, terms, n_out.expect_int());
}

Tensor sc_moment_cpu(T g, T x, const std::optional<Tensor>& v, T atom_type, T pairs, T cubes,
                     T terms, c10::SymInt n_types) {
  return sc_moment(g, x, v, atom_type, pairs, cubes, terms, n_types.expect_int());
}

Tensor sc_gradient_cpu(T p, T g, T x, const std::optional<Tensor>& v, T atom_type, T pairs,
                       T cubes, T terms) {
  return sc_gradient(p, g, x, v, atom_type, pairs, cubes, terms);
}

// The EdgeGraph fields of every edge operator's schema.
#define EQF_EDGE_GRAPH                                                                    \
  "Tensor gather, Tensor other, Tensor perm_o, Tensor offsets_o, Tensor perm_g, "         \
  "Tensor offsets_g, Tensor weight_row, Tensor perm_w, Tensor offsets_w, Tensor triples, " \
  "Tensor swapped"

void define(torch::Library& m) {
  m.def("cwtp_node_out(Tensor a, Tensor s, Tensor r, " EQF_EDGE_GRAPH
        ", SymInt n_out, SymInt d_out) -> Tensor");
  m.def("cwtp_edge_r(Tensor a, Tensor s, Tensor b, " EQF_EDGE_GRAPH ", SymInt n_paths) -> Tensor");
  m.def("cwtp_edge_s(Tensor a, Tensor r, Tensor b, " EQF_EDGE_GRAPH ") -> Tensor");
  m.def("sc_forward(Tensor p, Tensor x, Tensor? v, Tensor atom_type, Tensor pairs, "
        "Tensor cubes, Tensor terms, SymInt n_out) -> Tensor");
  m.def("sc_moment(Tensor g, Tensor x, Tensor? v, Tensor atom_type, Tensor pairs, "
        "Tensor cubes, Tensor terms, SymInt n_types) -> Tensor");
  m.def("sc_gradient(Tensor p, Tensor g, Tensor x, Tensor? v, Tensor atom_type, "
        "Tensor pairs, Tensor cubes, Tensor terms) -> Tensor");
  m.def("allegro_gather_contract(Tensor x, Tensor p, Tensor centre) -> Tensor");
  m.def("allegro_scatter_outer(Tensor x, Tensor y, Tensor centre, SymInt n_atoms) -> Tensor");
  m.def("allegro_scaled_mlp(Tensor[] blocks, Tensor[] weights, float[] alphas, bool silu, "
        "bool record) -> Tensor");
  m.def("allegro_geometry(Tensor edge_vec, Tensor? inverse_r_max, float inverse_uniform, "
        "int num_basis, int p, int l_max, bool float64) -> (Tensor, Tensor)");
  m.def("allegro_weighted_channels(Tensor basis, Tensor weights, Tensor irrep_of, int mul) "
        "-> Tensor");
  m.def("allegro_environment(Tensor basis, Tensor weights, Tensor irrep_of, Tensor centre, "
        "int mul, SymInt n_atoms) -> Tensor");
  m.def("allegro_weighting_backward(Tensor g, Tensor basis, Tensor weights, Tensor irrep_of, "
        "Tensor? centre, int mul) -> (Tensor, Tensor)");
  m.def("split_cat(Tensor[] blocks, int dim) -> Tensor");
  m.def("bond_pairs(Tensor edge_index, Tensor edge_shift) -> (Tensor, Tensor)");
}

void implement_cpu(torch::Library& m) {
  m.impl("cwtp_node_out", &cwtp_node_out);
  m.impl("cwtp_edge_r", &cwtp_edge_r);
  m.impl("cwtp_edge_s", &cwtp_edge_s);
  m.impl("sc_forward", &sc_forward_cpu);
  m.impl("sc_moment", &sc_moment_cpu);
  m.impl("sc_gradient", &sc_gradient_cpu);
  m.impl("allegro_gather_contract", &allegro_gather_contract);
  m.impl("allegro_scatter_outer", &allegro_scatter_outer);
  m.impl("allegro_weighted_channels", &allegro_weighted_channels);
  m.impl("allegro_environment", &allegro_environment);
  m.impl("allegro_weighting_backward", &allegro_weighting_backward);
  m.impl("bond_pairs", &bond_pairs);
}

}  // namespace

// TORCH_LIBRARY pastes its namespace argument (##), which would not expand a macro: one level
// of indirection expands EQF_OPS_NAMESPACE first.
#define EQF_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define EQF_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

EQF_LIBRARY(EQF_OPS_NAMESPACE, m) { define(m); }

EQF_LIBRARY_IMPL(EQF_OPS_NAMESPACE, CPU, m) { implement_cpu(m); }

EQF_LIBRARY_IMPL(EQF_OPS_NAMESPACE, Autograd, m) {
  m.impl("cwtp_node_out", &cwtp_node_out_autograd);
  m.impl("cwtp_edge_r", &cwtp_edge_r_autograd);
  m.impl("cwtp_edge_s", &cwtp_edge_s_autograd);
  m.impl("sc_forward", &sc_forward_autograd);
  m.impl("sc_moment", &sc_moment_autograd);
  m.impl("sc_gradient", &sc_gradient_autograd);
  m.impl("allegro_gather_contract", &allegro_gather_contract_autograd);
  m.impl("allegro_scatter_outer", &allegro_scatter_outer_autograd);
  m.impl("allegro_weighted_channels", &allegro_weighted_channels_autograd);
  m.impl("allegro_environment", &allegro_environment_autograd);
  m.impl("allegro_weighting_backward", &allegro_weighting_backward_autograd);
}

// Composite operators: one kernel for every device and mode, whose C++ autograd Functions
// record their own nodes (the forward loops are CPU only and say so). Tracers would see
// through them, so traces use the torch formulations instead (kernels/tracing.py).
EQF_LIBRARY_IMPL(EQF_OPS_NAMESPACE, CompositeImplicitAutograd, m) {
  m.impl("allegro_scaled_mlp", &allegro_scaled_mlp);
  m.impl("allegro_geometry", &allegro_geometry);
  m.impl("split_cat", &split_cat);
}
