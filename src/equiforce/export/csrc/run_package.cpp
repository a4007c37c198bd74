/* equiforce-run: an exported package run in C++ with no Python, on every frame of an XYZ file,
   or as molecular dynamics from its first frame.

     equiforce-run MODEL.pt2 STRUCTURES.xyz [--stress] [--repeat N] [--charge Q] [--spin M]
     equiforce-run MODEL.pt2 START.xyz --md STEPS --timestep FS [--every N]
                   [--temperature K --friction 1/FS [--seed N]] [--trajectory OUT.xyz]
                   [--charge Q] [--spin M]

   Any package runs here, MACE included: the whole structure is one program call (periodic
   images as lattice shifts of the edges, as the Python loader does), so no halo exchange is
   needed; the LAMMPS pair style instead splits a structure over MPI ranks and so takes strictly
   local packages only (docs/export.md, "Loading from C++"). This file is also the template for
   a C++ MD code: what it builds from positions, species and a cell is the whole interface.

   Input: an XYZ or extended XYZ file (what ase.io.write gives): per frame a line with the atom
   count, a comment line, then one line per atom `element x y z` (Å; further columns ignored).
   The comment may hold `Lattice="ax ay az bx by bz cx cy cz"` (Å, rows are the lattice
   vectors) and `pbc="T T F"` (default "T T T" with a lattice, no periodic axis without one);
   a `Properties=` that does not start with species:S:1:pos:R:3 is refused.

   With --md: velocity Verlet (NVE) as ASE's VelocityVerlet, or with --temperature and
   --friction Langevin dynamics (BAOAB), from the frame's `momenta` column (ASE's units, as
   ase.io.write gives them) or Maxwell-Boltzmann momenta (at rest for NVE), with the masses the
   package's metadata holds (`type_masses`, amu; packages before it: export again); one JSON
   line per state every N steps and a timing line (`run_md`), and with --trajectory the same
   states as extended XYZ frames (momenta and forces included, full precision, and the `step`:
   a run continues exactly from its last frame, Langevin noise included; `write_state`).

   Output: one JSON object per frame on stdout, {"frame", "n_atoms", "n_edges", "energy" (eV),
   "forces" (n_atoms x 3, eV/Å), "stress" (3 x 3, eV/Å^3, with --stress: a package exported
   with --stress), and with --repeat N "call_cpu_ms" and "call_wall_ms", the median over N
   further calls of the program alone (the neighbour list is built once per frame)}.

   The program's inputs are named by the package's `inputs` metadata (docs/export.md, "What a
   package contains"): atom_type (n,) int64, batch (n,) zeros, cell (1,3,3) float64 Å (zeros
   without a periodic axis), edge_index (2,E) int64 [centre, neighbour], edge_shift (E,3)
   float64 integer lattice shifts S (edge vector = pos[j] - pos[i] + S @ cell), pos (n,3)
   float64 Å, ptr (2,) [0, n], and for MACE the bonds, edge_pair_first (B,) int64 (the lowest
   edge of each bond) and edge_pair_of (E,) int64 (each edge's bond), and for a model that
   conditions on them total_charge and total_spin (1,) float64: --charge and --spin (every
   frame's; default a neutral singlet), checked against the integers a categorical one
   embeds (`<name>_range` in the metadata) and refused for a package that takes none. The
   neighbour search bins the atoms' periodic images in cubes of side >= r_max (O(n) for a
   dense structure) and makes each bond's two edges, (i, j, S) and (j, i, -S), together, so
   the bonds are known as they are made; the edges are then ordered by centre, neighbour and
   shift, as the Python loader's list (the kernels' memory access follows that order: on 3BPA
   the bond-by-bond order cost ~10 %). */
#include "package_reader.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <malloc.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using equiforce::fail;
using Vec3 = std::array<double, 3>;

struct Frame {
  std::vector<std::string> elements;
  std::vector<Vec3> positions;    // Å
  std::array<Vec3, 3> cell{};    // rows: lattice vectors, Å (zeros: none)
  std::array<bool, 3> pbc{false, false, false};
  std::vector<Vec3> momenta;    // ASE's units (amu Å / (Å sqrt(amu/eV))); empty: none given
  long long step = 0;    // the comment's `step=` (a trajectory frame of this runner), else 0
};

/* The first column of the real 3-vector `name` among `Properties=name:type:count:...`, or -1
   when it is not there; throws std::invalid_argument when a count is not a number. */
int vector_column(const std::string &properties, const std::string &name)
{
  std::istringstream fields(properties);
  std::string field, type, count;
  int column = 0;
  while (std::getline(fields, field, ':') && std::getline(fields, type, ':') &&
         std::getline(fields, count, ':')) {
    if (field == name && type == "R" && count == "3") return column;
    if (count.empty() || count.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("column count '" + count + "' of " + field);
    column += std::stoi(count);
  }
  return -1;
}

/* The text of `key="..."` (or key=word) in an extended XYZ comment line; empty if absent. */
std::string comment_value(const std::string &comment, const std::string &key)
{
  size_t at = 0;
  while ((at = comment.find(key + "=", at)) != std::string::npos) {
    if (at == 0 || std::isspace(static_cast<unsigned char>(comment[at - 1]))) break;
    at += key.size();
  }
  if (at == std::string::npos) return "";
  at += key.size() + 1;
  if (at < comment.size() && comment[at] == '"') {
    size_t end = comment.find('"', at + 1);
    return comment.substr(at + 1, end == std::string::npos ? end : end - at - 1);
  }
  return comment.substr(at, comment.find_first_of(" \t", at) - at);
}

/* The next frame of `file` into `frame`; false at the end of the file. */
bool read_frame(std::istream &file, const std::string &path, int index, Frame &frame)
{
  std::string line;
  while (std::getline(file, line) && line.find_first_not_of(" \t\r") == std::string::npos) {}
  if (!file) return false;
  const std::string where = "frame " + std::to_string(index);
  long long count = -1;
  try {
    size_t used = 0;
    count = std::stoll(line, &used);
    if (line.find_first_not_of(" \t\r", used) != std::string::npos) count = -1;
  } catch (const std::logic_error &) {
  }
  if (count < 0) fail(path, where + ": the first line is not an atom count: '" + line + "'");
  std::string comment;
  if (!std::getline(file, comment)) fail(path, where + ": no comment line");
  frame = Frame();
  std::string properties = comment_value(comment, "Properties");
  if (!properties.empty() && properties.rfind("species:S:1:pos:R:3", 0) != 0)
    fail(path, where + ": Properties=" + properties + " (this reader takes the element and the "
                           "position as the first four columns: species:S:1:pos:R:3...)");
  int momenta_column = -1;
  try {
    momenta_column = vector_column(properties, "momenta");
  } catch (const std::invalid_argument &err) {
    fail(path, where + ": Properties=" + properties + " is not name:type:count triples (" +
                   err.what() + ")");
  }
  const std::string step = comment_value(comment, "step");
  if (!step.empty()) {
    size_t used = 0;
    try {
      frame.step = std::stoll(step, &used);
    } catch (const std::logic_error &) {
      used = 0;
    }
    if (used != step.size() || frame.step < 0)
      fail(path, where + ": step=" + step + " is not a step number");
  }
  std::string lattice = comment_value(comment, "Lattice");
  if (!lattice.empty()) {
    std::istringstream numbers(lattice);
    for (auto &row : frame.cell)
      for (double &value : row)
        if (!(numbers >> value)) fail(path, where + ": Lattice=\"" + lattice + "\" is not 9 "
                                                         "numbers");
    frame.pbc = {true, true, true};
  }
  std::string pbc = comment_value(comment, "pbc");
  if (!pbc.empty()) {
    std::istringstream flags(pbc);
    for (bool &periodic : frame.pbc) {
      std::string flag;
      if (!(flags >> flag) || (flag != "T" && flag != "F"))
        fail(path, where + ": pbc=\"" + pbc + "\" is not three of T or F");
      periodic = flag == "T";
    }
    if (lattice.empty() && pbc != "F F F")
      fail(path, where + ": pbc=\"" + pbc + "\" without a Lattice");
  }
  for (long long atom = 0; atom < count; atom++) {
    if (!std::getline(file, line))
      fail(path, where + ": " + std::to_string(atom) + " of its " + std::to_string(count) +
                     " atom lines (the file ends)");
    std::istringstream words(line);
    std::string element;
    Vec3 position;
    if (!(words >> element >> position[0] >> position[1] >> position[2]))
      fail(path, where + ", atom " + std::to_string(atom) + ": '" + line + "' is not `element "
                                                                           "x y z`");
    frame.elements.push_back(element);
    frame.positions.push_back(position);
    if (momenta_column < 0) continue;
    std::string word;
    for (int column = 4; column < momenta_column && words >> word; column++) {}
    Vec3 momentum;
    if (!(words >> momentum[0] >> momentum[1] >> momentum[2]))
      fail(path, where + ", atom " + std::to_string(atom) + ": '" + line + "' has no momenta "
                                                                           "in its columns " +
                     std::to_string(momenta_column) + "-" + std::to_string(momenta_column + 2));
    frame.momenta.push_back(momentum);
  }
  return true;
}

struct Edges {
  std::vector<int64_t> centre, neighbour;
  std::vector<Vec3> shift;    // integer lattice shifts of the neighbour
  std::vector<int64_t> pair_first;    // (n_bonds,) the lowest edge of each bond, ascending
  std::vector<int64_t> pair_of;    // (n_edges,) the bond of each edge
};

/* `bonds` (edges 2b and 2b + 1 the two directions of bond b) ordered by centre, then
   neighbour, then shift, with their bonds: counted into each centre's run, each run sorted. */
Edges ordered(const Edges &bonds, size_t n_atoms)
{
  const size_t n_edges = bonds.centre.size();
  std::vector<size_t> start(n_atoms + 1, 0), order(n_edges), position(n_edges);
  for (int64_t centre : bonds.centre) start[centre + 1]++;
  for (size_t i = 0; i < n_atoms; i++) start[i + 1] += start[i];
  std::vector<size_t> next(start.begin(), start.end() - 1);
  for (size_t e = 0; e < n_edges; e++) order[next[bonds.centre[e]]++] = e;
  for (size_t i = 0; i < n_atoms; i++)
    std::sort(order.begin() + start[i], order.begin() + start[i + 1], [&](size_t a, size_t b) {
      return std::tie(bonds.neighbour[a], bonds.shift[a]) <
             std::tie(bonds.neighbour[b], bonds.shift[b]);
    });
  Edges edges;
  for (size_t k = 0; k < n_edges; k++) {
    position[order[k]] = k;
    edges.centre.push_back(bonds.centre[order[k]]);
    edges.neighbour.push_back(bonds.neighbour[order[k]]);
    edges.shift.push_back(bonds.shift[order[k]]);
  }
  edges.pair_of.resize(n_edges);
  std::vector<std::pair<size_t, size_t>> firsts;    // (lowest edge, bond)
  for (size_t b = 0; 2 * b < n_edges; b++)
    firsts.emplace_back(std::min(position[2 * b], position[2 * b + 1]), b);
  std::sort(firsts.begin(), firsts.end());
  for (size_t rank = 0; rank < firsts.size(); rank++) {
    size_t b = firsts[rank].second;
    edges.pair_first.push_back(static_cast<int64_t>(firsts[rank].first));
    edges.pair_of[position[2 * b]] = edges.pair_of[position[2 * b + 1]] = rank;
  }
  return edges;
}

double dot(const Vec3 &a, const Vec3 &b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

Vec3 cross(const Vec3 &a, const Vec3 &b)
{
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}

/* An atom's periodic image: the atom, its lattice shift and its position (Å). */
struct Image {
  size_t atom;
  std::array<int, 3> shift;
  Vec3 position;
};

/* Images in cubic bins of side >= r_max over the box [low, high] (Å): the images near a
   point lie in its bin and the 26 around it. */
class Bins {
 public:
  Bins(std::vector<Image> images, const Vec3 &low, const Vec3 &high, double r_max)
      : images_(std::move(images)), low_(low)
  {
    // at most ~8 bins per image: a sparse frame (a molecule's far-apart fragments) gets
    // larger bins, not a mostly empty grid
    const double limit = 8.0 * static_cast<double>(images_.size()) + 64.0;
    for (double side = r_max * (1 + 1e-9);; side *= 1.5) {
      double total = 1;
      for (int d = 0; d < 3; d++) {
        count_[d] = std::max<int64_t>(1, static_cast<int64_t>((high[d] - low[d]) / side));
        width_[d] = (high[d] - low[d]) / static_cast<double>(count_[d]);
        total *= static_cast<double>(count_[d]);
      }
      if (total <= limit) break;
    }
    std::vector<int64_t> bin_of(images_.size());
    start_.assign(count_[0] * count_[1] * count_[2] + 1, 0);
    for (size_t k = 0; k < images_.size(); k++) {
      bin_of[k] = flat(bin(images_[k].position));
      start_[bin_of[k] + 1]++;
    }
    for (size_t b = 1; b < start_.size(); b++) start_[b] += start_[b - 1];
    std::vector<int64_t> next(start_.begin(), start_.end() - 1);
    members_.resize(images_.size());
    for (size_t k = 0; k < images_.size(); k++) members_[next[bin_of[k]]++] = k;
  }

  /* Calls visit(image) for every image in the bins around `point`. */
  template <typename Visit>
  void around(const Vec3 &point, Visit visit) const
  {
    const std::array<int64_t, 3> at = bin(point);
    for (int64_t a = at[0] - 1; a <= at[0] + 1; a++)
      for (int64_t b = at[1] - 1; b <= at[1] + 1; b++)
        for (int64_t c = at[2] - 1; c <= at[2] + 1; c++) {
          if (a < 0 || b < 0 || c < 0 || a >= count_[0] || b >= count_[1] || c >= count_[2])
            continue;
          const int64_t here = flat({a, b, c});
          for (int64_t k = start_[here]; k < start_[here + 1]; k++) visit(images_[members_[k]]);
        }
  }

 private:
  std::array<int64_t, 3> bin(const Vec3 &point) const
  {
    std::array<int64_t, 3> at;
    for (int d = 0; d < 3; d++)
      at[d] = std::clamp<int64_t>(static_cast<int64_t>((point[d] - low_[d]) / width_[d]), 0,
                                  count_[d] - 1);
    return at;
  }
  int64_t flat(const std::array<int64_t, 3> &at) const
  {
    return (at[0] * count_[1] + at[1]) * count_[2] + at[2];
  }

  std::vector<Image> images_;
  Vec3 low_;
  std::array<int64_t, 3> count_;
  Vec3 width_;
  std::vector<int64_t> start_, members_;    // the images of bin b: members_[start_[b]:start_[b+1]]
};

/* Every edge i -> j with 0 < |pos[j] - pos[i] + S @ cell| < r_max and its bond (`ordered`).
   Periodic axes: the positions are wrapped into the cell for the search (their own shifts,
   W, go into the edges' S), and the images of the atoms within r_max of the box around the
   wrapped atoms, shifts along axis d over |S_d| <= floor(r_max / h_d) + 1 (h_d the cell's
   height across that axis), go into bins (`Bins`); each atom's bonds are found among the
   images in its bin and those around it, each bond once (i < j, or i == j with the first
   non-zero component of its shift positive), both its edges made together. O(n) per frame
   for a dense structure. */
Edges neighbour_list(const Frame &frame, double r_max, const std::string &where)
{
  const size_t n = frame.positions.size();
  const auto &cell = frame.cell;
  std::vector<Vec3> wrapped = frame.positions, wraps(n, Vec3{0, 0, 0});
  std::array<int, 3> reach{0, 0, 0};
  if (frame.pbc[0] || frame.pbc[1] || frame.pbc[2]) {
    const double volume = dot(cell[0], cross(cell[1], cell[2]));
    if (std::abs(volume) < 1e-12) fail(where, "the lattice has no volume");
    std::array<Vec3, 3> normals;    // reciprocal rows: fraction f_d = pos . normals[d]
    for (int d = 0; d < 3; d++) {
      Vec3 normal = cross(cell[(d + 1) % 3], cell[(d + 2) % 3]);
      for (double &value : normal) value /= volume;
      normals[d] = normal;
      if (frame.pbc[d]) reach[d] = static_cast<int>(r_max * std::sqrt(dot(normal, normal))) + 1;
    }
    for (size_t i = 0; i < n; i++)
      for (int d = 0; d < 3; d++) {
        if (!frame.pbc[d]) continue;
        double w = std::floor(dot(frame.positions[i], normals[d]));
        wraps[i][d] = w;
        for (int c = 0; c < 3; c++) wrapped[i][c] -= w * cell[d][c];
      }
  }
  // the box around the wrapped atoms, widened by r_max: every image within r_max of an atom
  Vec3 low = wrapped.empty() ? Vec3{0, 0, 0} : wrapped[0], high = low;
  for (const Vec3 &position : wrapped)
    for (int d = 0; d < 3; d++)
      low[d] = std::min(low[d], position[d]), high[d] = std::max(high[d], position[d]);
  for (int d = 0; d < 3; d++) low[d] -= 1.001 * r_max, high[d] += 1.001 * r_max;
  std::vector<Image> images;
  for (size_t j = 0; j < n; j++)
    for (int a = -reach[0]; a <= reach[0]; a++)
      for (int b = -reach[1]; b <= reach[1]; b++)
        for (int c = -reach[2]; c <= reach[2]; c++) {
          Vec3 position;
          for (int k = 0; k < 3; k++)
            position[k] = wrapped[j][k] + a * cell[0][k] + b * cell[1][k] + c * cell[2][k];
          bool inside = true;
          for (int k = 0; k < 3; k++) inside &= low[k] <= position[k] && position[k] <= high[k];
          if (inside) images.push_back({j, {a, b, c}, position});
        }
  const Bins bins(std::move(images), low, high, r_max);
  Edges bonds;
  const double cutoff = r_max * r_max;
  for (size_t i = 0; i < n; i++)
    bins.around(wrapped[i], [&](const Image &image) {
      const size_t j = image.atom;
      const auto &[a, b, c] = image.shift;
      if (j < i || (j == i && (a < 0 || (a == 0 && (b < 0 || (b == 0 && c <= 0)))))) return;
      Vec3 vector;
      for (int k = 0; k < 3; k++) vector[k] = image.position[k] - wrapped[i][k];
      double length2 = dot(vector, vector);
      if (length2 >= cutoff || length2 == 0.0) return;
      Vec3 shift{a - wraps[j][0] + wraps[i][0], b - wraps[j][1] + wraps[i][1],
                 c - wraps[j][2] + wraps[i][2]};
      bonds.centre.push_back(i), bonds.neighbour.push_back(j), bonds.shift.push_back(shift);
      bonds.centre.push_back(j), bonds.neighbour.push_back(i);
      bonds.shift.push_back({-shift[0], -shift[1], -shift[2]});
    });
  return ordered(bonds, n);
}

/* The program's inputs, in the package's `inputs` order (file docstring). */
std::vector<at::Tensor> program_inputs(const std::vector<std::string> &names,
                                       const std::vector<int64_t> &types, const Frame &frame,
                                       const Edges &edges, bool periodic,
                                       const std::map<std::string, double> &state)
{
  const int64_t n = static_cast<int64_t>(types.size());
  const int64_t n_edges = static_cast<int64_t>(edges.centre.size());
  auto real = at::TensorOptions().dtype(at::kDouble), index = real.dtype(at::kLong);
  std::vector<at::Tensor> inputs;
  for (const auto &name : names) {
    at::Tensor value;
    if (name == "atom_type") {
      value = at::tensor(types, index);
    } else if (name == "batch") {
      value = at::zeros({n}, index);
    } else if (name == "ptr") {
      value = at::tensor({int64_t(0), n}, index);
    } else if (name == "pos") {
      value = at::empty({n, 3}, real);
      std::copy_n(frame.positions.data()->data(), 3 * n, value.data_ptr<double>());
    } else if (name == "cell") {
      value = at::zeros({1, 3, 3}, real);
      if (periodic) std::copy_n(frame.cell.data()->data(), 9, value.data_ptr<double>());
    } else if (name == "edge_index") {
      value = at::empty({2, n_edges}, index);
      std::copy(edges.centre.begin(), edges.centre.end(), value.data_ptr<int64_t>());
      std::copy(edges.neighbour.begin(), edges.neighbour.end(),
                value.data_ptr<int64_t>() + n_edges);
    } else if (name == "edge_shift") {
      value = at::empty({n_edges, 3}, real);
      std::copy_n(edges.shift.data()->data(), 3 * n_edges, value.data_ptr<double>());
    } else if (name == "edge_pair_first") {
      value = at::tensor(edges.pair_first, index);
    } else if (name == "edge_pair_of") {
      value = at::tensor(edges.pair_of, index);
    } else if (state.count(name)) {
      value = at::tensor({state.at(name)}, real);
    } else {
      throw std::invalid_argument("the package takes an input '" + name + "' that "
                                  "equiforce-run cannot provide");
    }
    inputs.push_back(value);
  }
  return inputs;
}

double median(std::vector<double> values)
{
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double seconds(clockid_t clock)
{
  timespec now;
  clock_gettime(clock, &now);
  return now.tv_sec + 1e-9 * now.tv_nsec;
}

void print_rows(const at::Tensor &matrix)
{
  at::Tensor values = matrix.to(at::kDouble).contiguous();
  const double *v = values.data_ptr<double>();
  const int64_t rows = values.size(0), columns = values.size(1);
  std::printf("[");
  for (int64_t r = 0; r < rows; r++) {
    std::printf(r ? ", [" : "[");
    for (int64_t c = 0; c < columns; c++) std::printf(c ? ", %.17g" : "%.17g", v[r * columns + c]);
    std::printf("]");
  }
  std::printf("]");
}

/* Keep freed heap pages in the process, as the equiforce command line does
   (equiforce/allocator.py, its thresholds and why: each call frees and re-allocates the same
   buffers, which glibc would otherwise map afresh, ~10 % of a 3BPA float32 call);
   EQUIFORCE_MALLOC=default keeps glibc's defaults. */
void retain_freed_memory()
{
  const char *setting = std::getenv("EQUIFORCE_MALLOC");
  if (setting && std::string(setting) == "default") return;
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 16 << 20);
}

/* A package ready to run on frames: its metadata (file docstring) and its program. */
class Runner {
 public:
  explicit Runner(const std::string &model)
      : package_(model, "equiforce-run"),
        r_max_(package_.number_field("r_max")),
        max_atoms_(package_.integer_field("max_atoms", -1)),
        type_names_(package_.strings_field("type_names")),
        inputs_(package_.strings_field("inputs")),
        outputs_(package_.strings_field("outputs"))
  {
    if (package_.string_field("device") != "cpu")
      fail(model, "exported for " + package_.string_field("device") + "; equiforce-run runs "
                                                                      "CPU packages");
    program_ = package_.load_program();
  }

  const equiforce::PackageReader &package() const { return package_; }
  const std::vector<std::string> &type_names() const { return type_names_; }

  /* Where the output `name` is among the program's results (outputs().size(): absent). */
  size_t output(const std::string &name) const
  {
    return static_cast<size_t>(std::find(outputs_.begin(), outputs_.end(), name) -
                               outputs_.begin());
  }
  bool has_output(const std::string &name) const { return output(name) < outputs_.size(); }

  /* Each atom's type (its element's place in type_names); throws naming the frame and atom. */
  std::vector<int64_t> types(const Frame &frame, const std::string &path, int index) const
  {
    std::vector<int64_t> types;
    for (size_t atom = 0; atom < frame.elements.size(); atom++) {
      auto found = std::find(type_names_.begin(), type_names_.end(), frame.elements[atom]);
      if (found == type_names_.end())
        fail(path, "frame " + std::to_string(index) + ", atom " + std::to_string(atom) +
                       ": element " + frame.elements[atom] + ", which the model does not know "
                       "(its species: " + equiforce::joined(type_names_) + ")");
      types.push_back(found - type_names_.begin());
    }
    return types;
  }

  /* The program's inputs for `frame` (its neighbour list built here; `n_edges` set), checked
     against what a package runs on; throws naming `where`. */
  std::vector<at::Tensor> inputs(const Frame &frame, const std::vector<int64_t> &types,
                                 const std::string &where, size_t &n_edges) const
  {
    Edges edges = neighbour_list(frame, r_max_, where);
    const size_t n = types.size();
    n_edges = edges.centre.size();
    if (n < 2 || n_edges < 2)
      fail(where, "exported packages need >= 2 atoms and >= 2 edges within r_max = " +
                      std::to_string(r_max_) + " Å; it has " + std::to_string(n) + " atoms, " +
                      std::to_string(n_edges) + " edges");
    if (max_atoms_ >= 0 && static_cast<long long>(n) > max_atoms_)
      fail(where, std::to_string(n) + " atoms, more than the " + std::to_string(max_atoms_) +
                      " the package was exported for (equiforce export --max-atoms)");
    const bool periodic = frame.pbc[0] || frame.pbc[1] || frame.pbc[2];
    return program_inputs(inputs_, types, frame, edges, periodic, state_);
  }

  /* The frames' net charge and spin multiplicity (--charge, --spin; NaN: not given), for a
     package that takes them; throws for one that does not, or a value it cannot embed. */
  void set_state(double charge, double spin)
  {
    const std::map<std::string, double> given = {{"total_charge", charge}, {"total_spin", spin}};
    const std::map<std::string, std::string> option = {{"total_charge", "--charge"},
                                                       {"total_spin", "--spin"}};
    for (const auto &[name, value] : given) {
      const bool taken = std::find(inputs_.begin(), inputs_.end(), name) != inputs_.end();
      if (!taken && !std::isnan(value))
        throw std::invalid_argument(option.at(name) + ": the package does not condition on " +
                                    name);
      if (!taken) continue;
      const double number = std::isnan(value) ? (name == "total_spin" ? 1.0 : 0.0) : value;
      if (name == "total_spin" && number < 1)
        throw std::invalid_argument("--spin: the spin multiplicity 2S+1 is >= 1");
      if (package_.has(name + "_range")) {
        const std::vector<double> span = package_.numbers_field(name + "_range");
        if (number != std::round(number) || number < span[0] || number > span[1])
          throw std::invalid_argument(option.at(name) + " " + std::to_string(number) +
                                      ": the model embeds the integers " +
                                      std::to_string(static_cast<long long>(span[0])) + " to " +
                                      std::to_string(static_cast<long long>(span[1])) + " only");
      }
      state_[name] = number;
    }
  }

  /* One program call; throws naming `where`. */
  std::vector<at::Tensor> call(std::vector<at::Tensor> &inputs, const std::string &where) const
  {
    try {
      return program_->run(inputs);
    } catch (const std::exception &err) {
      fail(where, std::string("the package failed: ") + err.what());
    }
  }

 private:
  equiforce::PackageReader package_;
  double r_max_;
  long long max_atoms_;
  std::vector<std::string> type_names_, inputs_, outputs_;
  std::map<std::string, double> state_;    // total_charge, total_spin of the frames
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> program_;
};

/* One JSON line per frame of `path` (file docstring). */
void run_frames(const Runner &runner, const std::string &path, bool stress, int repeat)
{
  if (stress && !runner.has_output("stress"))
    fail(runner.package().path(), "this package was exported without stress (equiforce "
                                  "export --stress)");
  std::ifstream file(path);
  if (!file) fail(path, "cannot read the file");
  Frame frame;
  for (int index = 0; read_frame(file, path, index, frame); index++) {
    const std::string where = path + ": frame " + std::to_string(index);
    const std::vector<int64_t> types = runner.types(frame, path, index);
    size_t n_edges = 0;
    auto inputs = runner.inputs(frame, types, where, n_edges);
    std::vector<at::Tensor> result = runner.call(inputs, where);
    std::vector<double> cpu_ms, wall_ms;
    for (int k = 0; k < repeat; k++) {
      double cpu = seconds(CLOCK_THREAD_CPUTIME_ID), wall = seconds(CLOCK_MONOTONIC);
      runner.call(inputs, where);
      cpu_ms.push_back(1e3 * (seconds(CLOCK_THREAD_CPUTIME_ID) - cpu));
      wall_ms.push_back(1e3 * (seconds(CLOCK_MONOTONIC) - wall));
    }
    std::printf("{\"frame\": %d, \"n_atoms\": %zu, \"n_edges\": %zu, \"energy\": %.17g, "
                "\"forces\": ",
                index, types.size(), n_edges, result.at(runner.output("energy")).item<double>());
    print_rows(result.at(runner.output("forces")));
    if (stress) {
      std::printf(", \"stress\": ");
      print_rows(result.at(runner.output("stress")).reshape({3, 3}));
    }
    if (repeat > 0)
      std::printf(", \"call_cpu_ms\": %.6g, \"call_wall_ms\": %.6g", median(cpu_ms),
                  median(wall_ms));
    std::printf("}\n");
    std::fflush(stdout);
  }
}

// ASE's units (CODATA 2014, its default): time in Å sqrt(amu/eV), so 1 fs is FEMTOSECOND of
// it, and Boltzmann's constant in eV/K
constexpr double ELEMENTARY_CHARGE = 1.6021766208e-19, ATOMIC_MASS = 1.66053904e-27;
const double FEMTOSECOND = 1e-5 * std::sqrt(ELEMENTARY_CHARGE / ATOMIC_MASS);
constexpr double BOLTZMANN = 1.38064852e-23 / ELEMENTARY_CHARGE;

/* Forces (eV/Å, n x 3) and energy (eV) of `frame`; `call_ms` gets the program call's CPU time. */
std::vector<Vec3> forces_of(const Runner &runner, const Frame &frame,
                            const std::vector<int64_t> &types, const std::string &where,
                            double &energy, double &call_ms)
{
  size_t n_edges = 0;
  auto inputs = runner.inputs(frame, types, where, n_edges);
  const double start = seconds(CLOCK_THREAD_CPUTIME_ID);
  std::vector<at::Tensor> result = runner.call(inputs, where);
  call_ms = 1e3 * (seconds(CLOCK_THREAD_CPUTIME_ID) - start);
  energy = result.at(runner.output("energy")).item<double>();
  at::Tensor forces = result.at(runner.output("forces")).to(at::kDouble).contiguous();
  std::vector<Vec3> values(types.size());
  std::copy_n(forces.data_ptr<double>(), 3 * types.size(), values.data()->data());
  return values;
}

/* SplitMix64's output function (Steele, Lea and Flood 2014): a bijective mix of 64 bits. */
uint64_t mix64(uint64_t z)
{
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Standard normal number `index` of the stream `seed`: Box-Muller on draws 2 index + 1 and
   2 index + 2 of SplitMix64 started at mix64(seed). A pure function of (seed, index), so the
   noise of step s is the same whether the run started at step 0 or restarted at step s - 1. */
double normal_number(uint64_t seed, uint64_t index)
{
  constexpr uint64_t golden = 0x9e3779b97f4a7c15ULL;
  const uint64_t state = mix64(seed);
  const uint64_t a = mix64(state + (2 * index + 1) * golden);
  const uint64_t b = mix64(state + (2 * index + 2) * golden);
  const double u1 = (static_cast<double>(a >> 11) + 0.5) * 0x1.0p-53;    // in (0, 1)
  const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;    // in [0, 1)
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

/* One JSON line of an MD state: step, time (fs), potential and kinetic energy (eV),
   temperature (K, 3N degrees of freedom, as ASE's), positions (Å), velocities (Å/fs). */
void print_state(long long step, double timestep_fs, double energy, const Frame &frame,
                 const std::vector<double> &masses)
{
  const size_t n = masses.size();
  double kinetic = 0;
  for (size_t i = 0; i < n; i++)
    kinetic += 0.5 * dot(frame.momenta[i], frame.momenta[i]) / masses[i];
  std::printf("{\"step\": %lld, \"time_fs\": %.17g, \"energy\": %.17g, \"kinetic_energy\": %.17g, "
              "\"temperature_K\": %.17g, \"positions\": ",
              step, step * timestep_fs, energy, kinetic, 2 * kinetic / (3.0 * n * BOLTZMANN));
  print_rows(at::from_blob(const_cast<double *>(frame.positions.data()->data()),
                           {static_cast<int64_t>(n), 3}, at::kDouble));
  at::Tensor velocities = at::empty({static_cast<int64_t>(n), 3}, at::kDouble);
  for (size_t i = 0; i < n; i++)
    for (int d = 0; d < 3; d++)
      velocities.data_ptr<double>()[3 * i + d] = frame.momenta[i][d] / masses[i] * FEMTOSECOND;
  std::printf(", \"velocities\": ");
  print_rows(velocities);
  std::printf("}\n");
  std::fflush(stdout);
}

/* One extended XYZ frame of an MD state, as ase.io.read reads it and `read_frame` restarts
   from (full precision): the lattice and pbc, `energy` (eV), `step`, `time_fs`, and per atom
   the element, position (Å), momenta (ASE's units) and forces (eV/Å). */
void write_state(std::ostream &out, long long step, double time_fs, double energy,
                 const Frame &frame, const std::vector<Vec3> &forces)
{
  auto text = [](double value) {
    char digits[32];
    std::snprintf(digits, sizeof digits, "%.17g", value);
    return std::string(digits);
  };
  out << frame.positions.size() << "\n";
  if (frame.pbc[0] || frame.pbc[1] || frame.pbc[2]) {
    out << "Lattice=\"";
    for (int row = 0; row < 3; row++)
      for (int d = 0; d < 3; d++) out << (row || d ? " " : "") << text(frame.cell[row][d]);
    out << "\" ";
  }
  out << "Properties=species:S:1:pos:R:3:momenta:R:3:forces:R:3 energy=" << text(energy)
      << " step=" << step << " time_fs=" << text(time_fs) << " pbc=\"" << "FT"[frame.pbc[0]]
      << " " << "FT"[frame.pbc[1]] << " " << "FT"[frame.pbc[2]] << "\"\n";
  for (size_t i = 0; i < frame.positions.size(); i++) {
    out << frame.elements[i];
    for (const Vec3 *vector : {&frame.positions[i], &frame.momenta[i], &forces[i]})
      for (double value : *vector) out << " " << text(value);
    out << "\n";
  }
  out.flush();
}

/* How `--md` runs (file docstring). */
struct MDSettings {
  int steps = -1;    // < 0: no MD
  double timestep_fs = 0;
  int every = 1;
  double temperature_K = -1;    // < 0: NVE
  double friction_per_fs = 0;    // Langevin friction, 1/fs (with a temperature)
  unsigned long long seed = 0;
  std::string trajectory;    // extended XYZ of the states printed (empty: none)
};

/* MD from the first frame of `path` (file docstring): NVE by velocity Verlet, as ASE's
   VelocityVerlet (the same operations in the same order), or with a temperature Langevin
   dynamics by BAOAB splitting (half kick, half drift, the exact Ornstein-Uhlenbeck update
   p <- c p + sqrt((1 - c^2) m kT) xi with c = exp(-friction dt), half drift, new forces, half
   kick; Leimkuhler and Matthews), xi drawn by `normal_number` from (seed, step, atom, axis).
   Starts from the frame's momenta (an extended XYZ `momenta` column, as ase.io.write gives),
   else from Maxwell-Boltzmann momenta at the temperature (at rest for NVE), and from the
   frame's `step=` (0 if none): steps `step + 1` to `step + steps` are run, so a restart from
   a trajectory frame continues the numbering, the time and the noise. Masses from the
   package's `type_masses`. A state line every `every`-th step (of the numbering) and after
   the last, then {"md_steps", "n_atoms", "step_cpu_ms", "step_wall_ms",
   "call_cpu_ms"} (medians over the steps; a step = the kicks, drifts and thermostat, the
   neighbour list and the program call). */
void run_md(const Runner &runner, const std::string &path, const MDSettings &md)
{
  std::ifstream file(path);
  if (!file) fail(path, "cannot read the file");
  Frame frame;
  if (!read_frame(file, path, 0, frame)) fail(path, "no frame to start the MD from");
  const std::vector<int64_t> types = runner.types(frame, path, 0);
  const std::vector<double> type_masses = runner.package().numbers_field("type_masses");
  if (type_masses.size() != runner.type_names().size())
    fail(runner.package().path(), "metadata field 'type_masses' does not have one mass per "
                                  "type");
  const size_t n = types.size();
  std::vector<double> masses(n);
  for (size_t i = 0; i < n; i++) masses[i] = type_masses[types[i]];
  const bool langevin = md.temperature_K >= 0;
  const double kT = langevin ? BOLTZMANN * md.temperature_K : 0.0;
  // Normal number (s n + i) 3 + d of the seed's stream is the noise of step s, atom i, axis d
  // (step 0: the starting momenta), so a restart from a frame of step s draws what a run
  // never stopped draws after step s.
  auto noise = [&](long long step, size_t i, int d) {
    return normal_number(md.seed, (static_cast<uint64_t>(step) * n + i) * 3 + d);
  };
  if (frame.momenta.empty()) {
    frame.momenta.assign(n, Vec3{0, 0, 0});
    for (size_t i = 0; i < n; i++)
      for (int d = 0; d < 3; d++)
        frame.momenta[i][d] = std::sqrt(masses[i] * kT) * noise(frame.step, i, d);
  }
  const double dt = md.timestep_fs * FEMTOSECOND;
  const double c = std::exp(-md.friction_per_fs * md.timestep_fs);    // 1 for NVE
  const std::string where = path + ": MD step ";
  std::ofstream trajectory;
  if (!md.trajectory.empty()) {
    trajectory.open(md.trajectory);
    if (!trajectory) fail(md.trajectory, "cannot write the trajectory");
  }
  auto state = [&](long long step, double energy, const std::vector<Vec3> &forces) {
    print_state(step, md.timestep_fs, energy, frame, masses);
    if (trajectory.is_open())
      write_state(trajectory, step, step * md.timestep_fs, energy, frame, forces);
  };
  double energy = 0, call_ms = 0;
  const long long first = frame.step, last = first + md.steps;
  std::vector<Vec3> forces =
      forces_of(runner, frame, types, where + std::to_string(first), energy, call_ms);
  state(first, energy, forces);
  std::vector<double> step_cpu, step_wall, call_cpu;
  for (long long step = first + 1; step <= last; step++) {
    const double cpu = seconds(CLOCK_THREAD_CPUTIME_ID), wall = seconds(CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++)
      for (int d = 0; d < 3; d++) {
        double &p = frame.momenta[i][d], &x = frame.positions[i][d];
        p += 0.5 * dt * forces[i][d];
        if (!langevin) {
          x += dt * p / masses[i];
          continue;
        }
        x += 0.5 * dt * p / masses[i];
        p = c * p + std::sqrt((1 - c * c) * masses[i] * kT) * noise(step, i, d);
        x += 0.5 * dt * p / masses[i];
      }
    forces = forces_of(runner, frame, types, where + std::to_string(step), energy, call_ms);
    for (size_t i = 0; i < n; i++)
      for (int d = 0; d < 3; d++) frame.momenta[i][d] += 0.5 * dt * forces[i][d];
    step_cpu.push_back(1e3 * (seconds(CLOCK_THREAD_CPUTIME_ID) - cpu));
    step_wall.push_back(1e3 * (seconds(CLOCK_MONOTONIC) - wall));
    call_cpu.push_back(call_ms);
    if (step % md.every == 0 || step == last) state(step, energy, forces);
  }
  if (md.steps > 0)
    std::printf("{\"md_steps\": %d, \"n_atoms\": %zu, \"step_cpu_ms\": %.6g, "
                "\"step_wall_ms\": %.6g, \"call_cpu_ms\": %.6g}\n",
                md.steps, n, median(step_cpu), median(step_wall), median(call_cpu));
}

int run(int argc, char **argv)
{
  retain_freed_memory();
  std::vector<std::string> args(argv + 1, argv + argc);
  std::vector<std::string> files;
  bool stress = false;
  int repeat = 0;
  double charge = std::nan(""), spin = std::nan("");
  MDSettings md;
  for (size_t k = 0; k < args.size(); k++) {
    const bool valued = k + 1 < args.size();
    if (args[k] == "--stress") {
      stress = true;
    } else if (args[k] == "--repeat" && valued) {
      repeat = std::stoi(args[++k]);
    } else if (args[k] == "--md" && valued) {
      md.steps = std::stoi(args[++k]);
    } else if (args[k] == "--timestep" && valued) {
      md.timestep_fs = std::stod(args[++k]);
    } else if (args[k] == "--every" && valued) {
      md.every = std::stoi(args[++k]);
    } else if (args[k] == "--temperature" && valued) {
      md.temperature_K = std::stod(args[++k]);
    } else if (args[k] == "--friction" && valued) {
      md.friction_per_fs = std::stod(args[++k]);
    } else if (args[k] == "--seed" && valued) {
      md.seed = std::stoull(args[++k]);
    } else if (args[k] == "--trajectory" && valued) {
      md.trajectory = args[++k];
    } else if (args[k] == "--charge" && valued) {
      charge = std::stod(args[++k]);
    } else if (args[k] == "--spin" && valued) {
      spin = std::stod(args[++k]);
    } else if (args[k].rfind("--", 0) == 0) {
      throw std::invalid_argument("unknown option " + args[k]);
    } else {
      files.push_back(args[k]);
    }
  }
  if (files.size() != 2)
    throw std::invalid_argument("usage: equiforce-run MODEL.pt2 STRUCTURES.xyz [--stress] "
                                "[--repeat N] | [--md STEPS --timestep FS [--every N] "
                                "[--temperature K --friction 1/FS [--seed N]] "
                                "[--trajectory OUT.xyz]] [--charge Q] [--spin M]");
  if (md.steps >= 0 && (md.timestep_fs <= 0 || md.every < 1 || stress || repeat))
    throw std::invalid_argument("--md STEPS needs --timestep FS > 0 and --every N >= 1, and "
                                "takes neither --stress nor --repeat");
  if ((md.temperature_K >= 0) != (md.friction_per_fs > 0))
    throw std::invalid_argument("Langevin MD needs both --temperature K >= 0 and --friction "
                                "1/FS > 0 (neither: NVE)");
  Runner runner(files[0]);
  runner.set_state(charge, spin);
  c10::InferenceMode guard;
  if (md.steps >= 0)
    run_md(runner, files[1], md);
  else
    run_frames(runner, files[1], stress, repeat);
  return 0;
}

}    // namespace

int main(int argc, char **argv)
{
  try {
    return run(argc, argv);
  } catch (const std::exception &err) {
    std::fprintf(stderr, "%s\n", err.what());
    return 1;
  }
}
