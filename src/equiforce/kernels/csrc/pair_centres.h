// The centre index of Allegro's pair operators (allegro_product.cpp, allegro_tensor_track.cpp):
// a contiguous (n_edges,) int64 tensor of atoms below n_atoms, checked once per call before
// the loops read it.
#pragma once

#include <torch/types.h>

namespace equiforce_ops {

inline void check_centre(const char* op, const torch::Tensor& centre, int64_t n_edges,
                         int64_t n_atoms) {
  TORCH_CHECK(centre.scalar_type() == at::kLong && centre.dim() == 1 &&
                  centre.size(0) == n_edges && centre.is_contiguous(),
              op, ": centre must be a contiguous (n_edges,) int64 tensor");
  const int64_t* c = centre.data_ptr<int64_t>();
  for (int64_t e = 0; e < n_edges; ++e) {
    TORCH_CHECK(c[e] >= 0 && c[e] < n_atoms, op, ": centre[", e, "] = ", c[e],
                " is not an atom index below ", n_atoms);
  }
}

}  // namespace equiforce_ops
