/* Reading an exported equiforce package (a .pt2 AOTInductor archive) in C++: its metadata (the
   AOTInductor metadata strings `equiforce.<field>` that `equiforce export` writes, JSON
   values), the checks every C++ consumer makes before it runs one (the torch release, the
   format, the CPU's instruction sets: what equiforce.export.package checks in Python), and its
   program, after the kernel library it carries. Shared by the LAMMPS pair style's package runner
   (lammps/csrc/aoti_model.cpp) and the stand-alone runner (run_package.cpp); docs/export.md,
   "Loading from C++". Every error is a std::runtime_error naming the file. */
#ifndef EQUIFORCE_PACKAGE_READER_H
#define EQUIFORCE_PACKAGE_READER_H

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace equiforce {

/* Throws std::runtime_error("equiforce: <path>: <reason>"). */
[[noreturn]] void fail(const std::string &path, const std::string &reason);

/* "a b c" */
std::string joined(const std::vector<std::string> &words);

class PackageReader {
 public:
  /* Reads the metadata (not the program) and checks the package is one this program can run
     here: `consumer` names the program in the messages ("this plugin", "equiforce-run"). */
  PackageReader(const std::string &path, const std::string &consumer);

  const std::string &path() const { return path_; }
  /* The JSON text of field `key`; throws naming the key when the package lacks it. */
  const std::string &field(const std::string &key) const;
  /* Whether field `key` is present and not null. */
  bool has(const std::string &key) const;
  std::string string_field(const std::string &key) const;
  std::vector<std::string> strings_field(const std::string &key) const;
  double number_field(const std::string &key) const;
  std::vector<double> numbers_field(const std::string &key) const;
  /* An integer field, or `missing` where it is absent or null. */
  long long integer_field(const std::string &key, long long missing) const;

  /* Loads the kernel library the package carries (if any, and not loaded already), then its
     program. */
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> load_program() const;

 private:
  void check_release(const std::string &consumer) const;
  void check_cpu() const;
  void load_kernel_library() const;

  std::string path_;
  std::unordered_map<std::string, std::string> metadata_;
};

}    // namespace equiforce

#endif
