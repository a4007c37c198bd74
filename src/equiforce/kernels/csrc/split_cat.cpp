// torch.cat whose backward is one split_with_sizes, for the fast executors' block layouts.
//
// torch's own cat backward cuts the gradient with one `narrow` per block. Under create_graph
// (the forces of force training) each narrow is recorded, and in the next pass (the parameter
// backward) each one's backward allocates a zero tensor the size of the whole concatenation,
// copies its block in, and the blocks' zero tensors are summed: per block, two passes over the
// whole array. Here the backward is split_with_sizes (views), whose own backward is a single
// cat. Same values and derivatives of every order (the backward is differentiable ATen ops).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using torch::Tensor;

struct SplitCat : public torch::autograd::Function<SplitCat> {
  static Tensor forward(AutogradContext* ctx, at::TensorList blocks, int64_t dim) {
    std::vector<int64_t> sizes;
    sizes.reserve(blocks.size());
    for (const auto& block : blocks) sizes.push_back(block.size(dim));
    ctx->saved_data["sizes"] = sizes;
    ctx->saved_data["dim"] = dim;
    return at::cat(blocks, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto sizes = ctx->saved_data["sizes"].toIntVector();
    auto parts = grads[0].split_with_sizes(sizes, ctx->saved_data["dim"].toInt());
    variable_list out(parts.begin(), parts.end());
    out.emplace_back();  // dim
    return out;
  }
};

}  // namespace

// blocks: tensors of one dtype and device, equal but for `dim` (>= 0).
torch::Tensor split_cat(at::TensorList blocks, int64_t dim) {
  TORCH_CHECK(!blocks.empty(), "split_cat: no tensors");
  TORCH_CHECK(dim >= 0 && dim < blocks[0].dim(), "split_cat: dim ", dim, " out of range");
  return SplitCat::apply(blocks, dim);  // an ArrayRef: autograd sees its tensors
}
