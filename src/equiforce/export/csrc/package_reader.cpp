/* PackageReader (package_reader.h): an exported package's metadata, the checks, its program. */
#include "package_reader.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/headeronly/version.h>

#include <dlfcn.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace equiforce {

void fail(const std::string &path, const std::string &reason)
{
  throw std::runtime_error("equiforce: " + path + ": " + reason);
}

std::string joined(const std::vector<std::string> &words)
{
  std::string text;
  for (const auto &word : words) text += (text.empty() ? "" : " ") + word;
  return text;
}

namespace {

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

/* A JSON array whose elements `element(text, at)` reads (advancing `at` past each). */
template <typename Value, typename Element>
std::vector<Value> json_list(const std::string &text, Element element)
{
  std::vector<Value> values;
  size_t at = 0;
  skip_blanks(text, at);
  if (at >= text.size() || text[at] != '[') throw std::invalid_argument("expected a list");
  ++at;
  skip_blanks(text, at);
  while (at < text.size() && text[at] != ']') {
    values.push_back(element(text, at));
    skip_blanks(text, at);
    if (at < text.size() && text[at] == ',') ++at;
    skip_blanks(text, at);
  }
  if (at >= text.size()) throw std::invalid_argument("unterminated list");
  return values;
}

/* A JSON array of strings, e.g. ["H", "C"]. */
std::vector<std::string> json_strings(const std::string &text)
{
  return json_list<std::string>(text, json_string);
}

/* A JSON array of numbers, e.g. [1.008, 12.011]. */
std::vector<double> json_numbers(const std::string &text)
{
  return json_list<double>(text, [](const std::string &list, size_t &at) {
    size_t used = 0;
    double value = std::stod(list.substr(at), &used);
    at += used;
    return value;
  });
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

/* "2.13.0+cpu" -> "2.13" */
std::string release(const std::string &version)
{
  size_t first = version.find('.');
  size_t second = first == std::string::npos ? first : version.find('.', first + 1);
  return version.substr(0, second);
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

}    // namespace

PackageReader::PackageReader(const std::string &path, const std::string &consumer) : path_(path)
{
  try {
    metadata_ = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
  } catch (const std::exception &err) {
    fail(path, std::string("not a readable AOTInductor package (missing, truncated or "
                           "corrupted?): ") + err.what());
  }
  check_release(consumer);
  check_cpu();
}

const std::string &PackageReader::field(const std::string &key) const
{
  auto found = metadata_.find("equiforce." + key);
  if (found == metadata_.end())
    fail(path_, "no '" + key + "' in the package's metadata: not a package written by "
                               "`equiforce export` (or one from an older equiforce: export it "
                               "again)");
  return found->second;
}

bool PackageReader::has(const std::string &key) const
{
  auto found = metadata_.find("equiforce." + key);
  return found != metadata_.end() && found->second != "null";
}

std::string PackageReader::string_field(const std::string &key) const
{
  size_t at = 0;
  try {
    return json_string(field(key), at);
  } catch (const std::invalid_argument &err) {
    fail(path_, "metadata field '" + key + "': " + err.what());
  }
}

std::vector<std::string> PackageReader::strings_field(const std::string &key) const
{
  try {
    return json_strings(field(key));
  } catch (const std::invalid_argument &err) {
    fail(path_, "metadata field '" + key + "': " + err.what());
  }
}

std::vector<double> PackageReader::numbers_field(const std::string &key) const
{
  try {
    return json_numbers(field(key));
  } catch (const std::logic_error &err) {
    fail(path_, "metadata field '" + key + "' is not a list of numbers: " + field(key));
  }
}

double PackageReader::number_field(const std::string &key) const
{
  try {
    return std::stod(field(key));
  } catch (const std::logic_error &err) {
    fail(path_, "metadata field '" + key + "' is not a number: " + field(key));
  }
}

long long PackageReader::integer_field(const std::string &key, long long missing) const
{
  if (!has(key)) return missing;
  try {
    return std::stoll(field(key));
  } catch (const std::logic_error &err) {
    fail(path_, "metadata field '" + key + "' is not an integer: " + field(key));
  }
}

/* Refuse another torch release than this program's libtorch, or another package format. */
void PackageReader::check_release(const std::string &consumer) const
{
  std::string built = string_field("torch_version");
  std::string here =
      std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR);
  if (release(built) != here)
    fail(path_, "exported with torch " + built + ", " + consumer + " is linked to libtorch " +
                    here + "; AOTInductor packages run only under the torch release that "
                    "compiled them (export the model file again with this torch)");
  if (string_field("format") != "equiforce-aoti-1")
    fail(path_, "package format " + field("format") + ", " + consumer + " reads "
                    "equiforce-aoti-1");
}

/* Refuse a package whose compiled code may use an instruction-set extension this CPU lacks
   (metadata `cpu`: machine, target, features; equiforce.cpu_features): its first call would
   stop the program at an illegal instruction, with no message. As equiforce.export.package
   does; packages from before the field and CPUs whose flags cannot be read are not checked. */
void PackageReader::check_cpu() const
{
  if (!has("cpu")) return;
  const std::string &cpu = field("cpu");
  std::string machine, target;
  std::vector<std::string> features;
  try {
    size_t at = member_value(cpu, "machine");
    machine = json_string(cpu, at);
    at = member_value(cpu, "target");
    target = json_string(cpu, at);
    features = json_strings(cpu.substr(member_value(cpu, "features")));
  } catch (const std::invalid_argument &err) {
    fail(path_, std::string("metadata field 'cpu': ") + err.what());
  }
  struct utsname name;
  if (uname(&name) == 0 && machine != name.machine)
    fail(path_, "compiled for " + machine + " CPUs, this is " + name.machine +
                    "; export the model file again on this machine");
  std::vector<std::string> present, missing;
  if (!cpu_flags(present)) return;
  for (const auto &feature : features)
    if (std::find(present.begin(), present.end(), feature) == present.end())
      missing.push_back(feature);
  if (!missing.empty())
    fail(path_, "compiled for CPUs with " + joined(missing) + " (equiforce export --cpu-target " +
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
void PackageReader::load_kernel_library() const
{
  if (!has("kernel_library")) return;
  const std::string &library = field("kernel_library");
  std::string file, first_operator;
  try {
    size_t at = member_value(library, "file");
    file = json_string(library, at);
    auto operators = json_strings(library.substr(member_value(library, "operators")));
    if (operators.empty()) throw std::invalid_argument("no operators");
    first_operator = operators.front();
  } catch (const std::invalid_argument &err) {
    fail(path_, std::string("metadata field 'kernel_library': ") + err.what());
  }
  if (c10::Dispatcher::singleton().findSchema({first_operator, ""}).has_value()) return;
  at::DataPtr data;
  size_t size = 0;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path_);
    std::tie(data, size) = reader.getRecord(file);
  } catch (const std::exception &err) {
    fail(path_, "the program calls operators of the kernel library " + file + ", which the "
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
  if (!handle) fail(path_, "cannot load the kernel library " + file + " it carries: " + why);
}

std::unique_ptr<torch::inductor::AOTIModelPackageLoader> PackageReader::load_program() const
{
  load_kernel_library();
  try {
    return std::make_unique<torch::inductor::AOTIModelPackageLoader>(path_, "model");
  } catch (const std::exception &err) {
    fail(path_, std::string("AOTInductor cannot load the package: ") + err.what());
  }
}

}    // namespace equiforce
