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
   (Allegro's tensor product, `fast` backend) carries it; it is loaded before the program. */
#include "aoti_model.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/headeronly/version.h>

#include <dlfcn.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

namespace equiforce {

namespace {

using Metadata = std::unordered_map<std::string, std::string>;

[[noreturn]] void fail(const std::string &path, const std::string &reason)
{
  throw std::runtime_error("equiforce: " + path + ": " + reason);
}

/* A JSON string literal starting at text[at] (at its opening quote); `at` moves past it.
   Escapes \" \\ \/ \n \t are decoded; \uXXXX is kept verbatim (element symbols, input and
   output names are ASCII). */
std::string json_string(const std::string &text, size_t &at)
{
  if (at >= text.size() || text[at] != '"') throw std::invalid_argument("expected a string");
  std::string value;
  for (++at; at < text.size() && text[at] != '"'; ++at) {
    char c = text[at];
    if (c == '\\' && at + 1 < text.size()) {
      c = text[++at];
      if (c == 'n') c = '\n';
      if (c == 't') c = '\t';
      if (c == 'u') value += '\\';
    }
    value += c;
  }
  if (at >= text.size()) throw std::invalid_argument("unterminated string");
  ++at;
  return value;
}

void skip_blanks(const std::string &text, size_t &at)
{
  while (at < text.size() && std::isspace(static_cast<unsigned char>(text[at]))) ++at;
}

/* A JSON array of strings, e.g. ["H", "C"]. */
std::vector<std::string> json_strings(const std::string &text)
{
  std::vector<std::string> values;
  size_t at = 0;
  skip_blanks(text, at);
  if (at >= text.size() || text[at] != '[') throw std::invalid_argument("expected a list");
  ++at;
  skip_blanks(text, at);
  while (at < text.size() && text[at] != ']') {
    values.push_back(json_string(text, at));
    skip_blanks(text, at);
    if (at < text.size() && text[at] == ',') ++at;
    skip_blanks(text, at);
  }
  if (at >= text.size()) throw std::invalid_argument("unterminated list");
  return values;
}

/* The JSON text of metadata field `key` (AOTInductor metadata `equiforce.<key>`). */
const std::string &field(const Metadata &metadata, const std::string &path, const std::string &key)
{
  auto found = metadata.find("equiforce." + key);
  if (found == metadata.end())
    fail(path, "no '" + key + "' in the package's metadata: not a package written by "
                              "`equiforce export` (or one from an older equiforce: export it again)");
  return found->second;
}

std::string string_field(const Metadata &metadata, const std::string &path, const std::string &key)
{
  size_t at = 0;
  try {
    return json_string(field(metadata, path, key), at);
  } catch (const std::invalid_argument &err) {
    fail(path, "metadata field '" + key + "': " + err.what());
  }
}

std::vector<std::string> strings_field(const Metadata &metadata, const std::string &path,
                                       const std::string &key)
{
  try {
    return json_strings(field(metadata, path, key));
  } catch (const std::invalid_argument &err) {
    fail(path, "metadata field '" + key + "': " + err.what());
  }
}

std::string joined(const std::vector<std::string> &words)
{
  std::string text;
  for (const auto &word : words) text += (text.empty() ? "" : " ") + word;
  return text;
}

/* "2.13.0+cpu" -> "2.13" */
std::string release(const std::string &version)
{
  size_t first = version.find('.');
  size_t second = first == std::string::npos ? first : version.find('.', first + 1);
  return version.substr(0, second);
}

/* Refuse a package this path cannot run: another torch release, a model that passes
   messages, no per-atom energies or edge gradients. */
void check_runnable(const Metadata &metadata, const std::string &path)
{
  std::string built = string_field(metadata, path, "torch_version");
  std::string here = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR);
  if (release(built) != here)
    fail(path, "exported with torch " + built + ", this plugin is linked to libtorch " + here +
                   "; AOTInductor packages run only under the torch release that compiled them "
                   "(export the model file again with this torch)");
  std::string family = string_field(metadata, path, "family");
  if (string_field(metadata, path, "format") != "equiforce-aoti-1")
    fail(path, "package format " + field(metadata, path, "format") + ", this plugin reads "
                   "equiforce-aoti-1");
  if (field(metadata, path, "strictly_local") != "true") {
    auto layers = metadata.find("equiforce.message_passing_layers");
    std::string count = layers == metadata.end() ? "" : " (" + layers->second + " layers)";
    fail(path, "this " + family + " package is not strictly local: its model passes messages "
                   "between atoms" + count + ", which needs a halo exchange between layers on "
                   "every MPI rank, and a package runs as one program. Run the model file "
                   "instead (pair_style equiforce model.pt under `equiforce lammps`: the "
                   "Python-callback path, which exchanges per layer); packages run in C++ for "
                   "strictly local models (Allegro)");
  }
  auto outputs = strings_field(metadata, path, "outputs");
  for (const char *name : {"node_energy", "edge_gradient"})
    if (std::find(outputs.begin(), outputs.end(), name) == outputs.end())
      fail(path, std::string("the package has no '") + name + "' output (its outputs: " +
                     joined(outputs) + "); LAMMPS needs the per-atom energies and the edge "
                     "gradients of local atoms: equiforce export MODEL OUT.pt2 --per-atom (with "
                     "this equiforce: packages before edge_gradient lack it)");
}

/* The text after `"key":` in a flat JSON object (blanks skipped). */
size_t member_value(const std::string &object, const std::string &key)
{
  size_t at = object.find("\"" + key + "\"");
  if (at == std::string::npos) throw std::invalid_argument("no member '" + key + "'");
  at = object.find(':', at + key.size() + 2);
  if (at == std::string::npos) throw std::invalid_argument("no value of '" + key + "'");
  ++at;
  skip_blanks(object, at);
  return at;
}

/* The instruction-set extensions this CPU has: the first `flags` (x86) or `Features` (aarch64)
   line of /proc/cpuinfo; false when there is none to read. */
bool cpu_flags(std::vector<std::string> &flags)
{
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    size_t colon = line.find(':');
    std::string key = line.substr(0, std::min(line.find_first_of(" \t:"), colon));
    if (colon == std::string::npos || (key != "flags" && key != "Features")) continue;
    std::istringstream words(line.substr(colon + 1));
    for (std::string word; words >> word;) flags.push_back(word);
    return true;
  }
  return false;
}

/* Refuse a package whose compiled code may use an instruction-set extension this CPU lacks
   (metadata `cpu`: machine, target, features; equiforce.cpu_features): its first call would
   stop the rank at an illegal instruction, with no message. As equiforce.export.package does;
   packages from before the field and CPUs whose flags cannot be read are not checked. */
void check_cpu(const Metadata &metadata, const std::string &path)
{
  auto found = metadata.find("equiforce.cpu");
  if (found == metadata.end() || found->second == "null") return;
  const std::string &cpu = found->second;
  std::string machine, target;
  std::vector<std::string> features;
  try {
    size_t at = member_value(cpu, "machine");
    machine = json_string(cpu, at);
    at = member_value(cpu, "target");
    target = json_string(cpu, at);
    features = json_strings(cpu.substr(member_value(cpu, "features")));
  } catch (const std::invalid_argument &err) {
    fail(path, std::string("metadata field 'cpu': ") + err.what());
  }
  struct utsname name;
  if (uname(&name) == 0 && machine != name.machine)
    fail(path, "compiled for " + machine + " CPUs, this is " + name.machine +
                   "; export the model file again on this machine");
  std::vector<std::string> present, missing;
  if (!cpu_flags(present)) return;
  for (const auto &feature : features)
    if (std::find(present.begin(), present.end(), feature) == present.end())
      missing.push_back(feature);
  if (!missing.empty())
    fail(path, "compiled for CPUs with " + joined(missing) + " (equiforce export --cpu-target " +
                   target + "), which this CPU lacks: its code would stop at an illegal "
                   "instruction. Export the model file again on this machine, or for every CPU "
                   "of a cluster with --cpu-target x86-64-v3 (AVX2) or x86-64-v4 (AVX-512)");
}

/* Load the operator library a package carries (metadata `kernel_library`, null when its
   program calls aten's operators only; docs/export.md), as equiforce.export.load_exported
   does: the shared object is unpacked from the archive into a temporary file, dlopen'ed (its
   TORCH_LIBRARY registers the operators the program calls by name) and the file removed.
   Nothing is done when the operators are registered already (the namespace hashes the build:
   one namespace is one library). */
void load_kernel_library(const Metadata &metadata, const std::string &path)
{
  auto found = metadata.find("equiforce.kernel_library");
  if (found == metadata.end() || found->second == "null") return;
  const std::string &library = found->second;
  std::string file, first_operator;
  try {
    size_t at = member_value(library, "file");
    file = json_string(library, at);
    auto operators = json_strings(library.substr(member_value(library, "operators")));
    if (operators.empty()) throw std::invalid_argument("no operators");
    first_operator = operators.front();
  } catch (const std::invalid_argument &err) {
    fail(path, std::string("metadata field 'kernel_library': ") + err.what());
  }
  if (c10::Dispatcher::singleton().findSchema({first_operator, ""}).has_value()) return;
  at::DataPtr data;
  size_t size = 0;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    std::tie(data, size) = reader.getRecord(file);
  } catch (const std::exception &err) {
    fail(path, "the program calls operators of the kernel library " + file + ", which the "
                   "archive does not hold (" + err.what() + "): export the model file again");
  }
  const char *folder = std::getenv("TMPDIR");
  std::string name = std::string(folder && *folder ? folder : "/tmp") +
                     "/equiforce-kernels-XXXXXX.so";
  int fd = mkstemps(name.data(), 3);
  bool written = fd >= 0 && write(fd, data.get(), size) == static_cast<ssize_t>(size);
  if (fd >= 0) close(fd);
  void *handle = written ? dlopen(name.c_str(), RTLD_NOW | RTLD_GLOBAL) : nullptr;
  std::string why = written ? (handle ? "" : dlerror()) : "cannot write " + name;
  if (fd >= 0) unlink(name.c_str());    // the loaded library stays mapped
  if (!handle) fail(path, "cannot load the kernel library " + file + " it carries: " + why);
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
  Metadata metadata;
  try {
    metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
  } catch (const std::exception &err) {
    fail(path, std::string("not a readable AOTInductor package (missing, truncated or "
                           "corrupted?): ") + err.what());
  }
  check_runnable(metadata, path);
  check_cpu(metadata, path);
  try {
    r_max_ = std::stod(field(metadata, path, "r_max"));
  } catch (const std::logic_error &err) {
    fail(path, "metadata field 'r_max' is not a number");
  }
  auto bound = metadata.find("equiforce.max_atoms");    // absent before --max-atoms existed
  if (bound != metadata.end() && bound->second != "null") {
    try {
      max_atoms_ = std::stoll(bound->second);
    } catch (const std::logic_error &err) {
      fail(path, "metadata field 'max_atoms' is not an integer: " + bound->second);
    }
  }
  type_names_ = strings_field(metadata, path, "type_names");
  inputs_ = strings_field(metadata, path, "inputs");
  for (const auto &name : inputs_)
    if (name != "atom_type" && name != "batch" && name != "cell" && name != "edge_index" &&
        name != "edge_shift" && name != "pos" && name != "ptr")
      fail(path, "the package takes an input '" + name + "' that this plugin cannot provide");
  auto outputs = strings_field(metadata, path, "outputs");
  edge_gradient_ = index_of(outputs, "edge_gradient");
  node_energy_ = index_of(outputs, "node_energy");
  std::string device = string_field(metadata, path, "device");
  device_ = c10::Device(device == "cuda" ? c10::kCUDA : c10::kCPU);
  load_kernel_library(metadata, path);
  try {
    loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model");
  } catch (const std::exception &err) {
    fail(path, std::string("AOTInductor cannot load the package: ") + err.what());
  }
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
