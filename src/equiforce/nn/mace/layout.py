"""The order of MACE's node features inside their irrep blocks: ``ir_mul`` (channel-last).

MACE's features have one multiplicity ``C`` across blocks, so in ``ir_mul``
(``equiforce.o3.irreps.LAYOUTS``) a row ``(irreps.dim,)`` is ``(irreps.dim // C, C)``: the
layout the fast executors' C++ kernels and GEMMs read as it lies. Every linear map,
convolution and contraction of the model is built for it, so features pass from one to the
next without a layout change. Weights do not depend on it (they load from mace-torch and
e3nn unchanged), and scalars (the embedding, the readouts' inputs, ``node_features``) are the
same in either layout.
"""

NODE_LAYOUT = "ir_mul"
