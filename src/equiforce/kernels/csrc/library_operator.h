// An operator of this build's kernel library, called through the dispatcher by name (autograd
// included, unless a guard such as at::AutoDispatchBelowADInplaceOrView excludes it): the
// autograd kernels call the library's operators this way, so their backward passes are again
// differentiable and traced as the same opaque calls.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#ifndef EQF_OPS_NAMESPACE
#error "EQF_OPS_NAMESPACE must name the operator namespace"
#endif
#define EQF_STRING(x) #x
#define EQF_QUALIFIED(ns, name) EQF_STRING(ns) "::" name
// "<namespace>::<name>" of an operator of this library
#define EQF_OPERATOR(name) EQF_QUALIFIED(EQF_OPS_NAMESPACE, name)

namespace equiforce_ops {

// The typed handle of the library's operator `qualified_name` (EQF_OPERATOR(name)); look it up
// once (a function-local static) and call it with .call(...).
template <typename Signature>
c10::TypedOperatorHandle<Signature> library_operator(const char* qualified_name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified_name, "").typed<Signature>();
}

}  // namespace equiforce_ops
