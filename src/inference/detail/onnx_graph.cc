#include "inference/detail/onnx_graph.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

namespace kadr::inference::detail {
namespace {

constexpr std::int64_t kMaxExpandFactor = 64;
constexpr std::int64_t kMaxExpandedElements = 4'000'000;

std::vector<std::int64_t> DimsOf(const onnx::ValueInfoProto& v) {
  std::vector<std::int64_t> dims;
  if (!v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return dims;
  for (const auto& d : v.type().tensor_type().shape().dim()) {
    dims.push_back(d.has_dim_value() && d.dim_value() > 0 ? d.dim_value() : -1);
  }
  return dims;
}

bool AllStatic(const std::vector<std::int64_t>& dims) {
  return !dims.empty() &&
         std::all_of(dims.begin(), dims.end(), [](std::int64_t d) { return d > 0; });
}

// Numpy broadcast of `small` (right-aligned) to `big`; empty when incompatible.
std::vector<std::int64_t> BroadcastShape(const std::vector<std::int64_t>& small,
                                         const std::vector<std::int64_t>& big) {
  if (small.size() > big.size()) return {};
  std::vector<std::int64_t> out(big);
  const size_t off = big.size() - small.size();
  for (size_t i = 0; i < small.size(); ++i) {
    if (small[i] != 1 && small[i] != big[off + i]) return {};
  }
  return out;
}

// Expands a float tensor of shape `from` to shape `to` (same as numpy.broadcast_to).
bool ExpandFloatTensor(onnx::TensorProto& t, const std::vector<std::int64_t>& to) {
  if (t.data_type() != onnx::TensorProto::FLOAT) return false;
  std::vector<std::int64_t> from(t.dims().begin(), t.dims().end());
  std::int64_t n_from = 1;
  for (auto d : from) n_from *= d;
  std::vector<float> src(static_cast<size_t>(n_from));
  if (!t.raw_data().empty()) {
    if (t.raw_data().size() != src.size() * sizeof(float)) return false;
    std::memcpy(src.data(), t.raw_data().data(), t.raw_data().size());
  } else if (t.float_data_size() == n_from) {
    std::copy(t.float_data().begin(), t.float_data().end(), src.begin());
  } else {
    return false;
  }
  // Right-align `from` against `to`.
  std::vector<std::int64_t> aligned(to.size() - from.size(), 1);
  aligned.insert(aligned.end(), from.begin(), from.end());
  std::int64_t n_to = 1;
  for (auto d : to) n_to *= d;
  std::vector<float> dst(static_cast<size_t>(n_to));
  std::vector<std::int64_t> idx(to.size(), 0);
  for (std::int64_t i = 0; i < n_to; ++i) {
    std::int64_t s = 0;
    for (size_t k = 0; k < to.size(); ++k) s = s * aligned[k] + (aligned[k] == 1 ? 0 : idx[k]);
    dst[static_cast<size_t>(i)] = src[static_cast<size_t>(s)];
    for (size_t k = to.size(); k-- > 0;) {  // odometer increment
      if (++idx[k] < to[k]) break;
      idx[k] = 0;
    }
  }
  t.clear_dims();
  for (auto d : to) t.add_dims(d);
  t.clear_float_data();
  t.set_raw_data(
      std::string(reinterpret_cast<const char*>(dst.data()), dst.size() * sizeof(float)));
  return true;
}

std::string ShapeString(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

}  // namespace

Result<NormalizedOnnx> NormalizeOnnx(const std::string& bytes) {
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes) || !model.has_graph()) {
    return InvalidArgumentError("not a valid ONNX model (protobuf parse failed)");
  }
  NormalizedOnnx out;
  OnnxGraphInfo& info = out.info;
  info.producer = model.producer_name() + " " + model.producer_version();
  for (const auto& op : model.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") info.opset = op.version();
  }
  for (const auto& p : model.metadata_props()) info.metadata[p.key()] = p.value();

  // Shape inference on a copy: we only want the inferred value_info for our decisions,
  // not to ship it to OpenCV.
  onnx::ModelProto inferred = model;
  try {
    onnx::shape_inference::InferShapes(inferred);
  } catch (const std::exception&) {
    // Partial information is still useful; shapes we can't infer are left unknown.
  }
  std::map<std::string, std::vector<std::int64_t>> shapes;
  const auto& ig = inferred.graph();
  for (const auto& v : ig.value_info()) shapes[v.name()] = DimsOf(v);
  for (const auto& v : ig.input()) shapes[v.name()] = DimsOf(v);
  for (const auto& v : ig.output()) shapes[v.name()] = DimsOf(v);

  onnx::GraphProto* g = model.mutable_graph();
  std::map<std::string, onnx::TensorProto*> constants;
  std::set<std::string> initializer_names;
  for (auto& t : *g->mutable_initializer()) {
    constants[t.name()] = &t;
    initializer_names.insert(t.name());
  }
  std::set<std::string> quantized;
  static const std::set<std::string> kQuantOps = {
      "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "ConvInteger",
      "MatMulInteger",         "QLinearConv",    "QLinearMatMul"};
  std::map<std::string, int> uses;
  for (auto& n : *g->mutable_node()) {
    if (kQuantOps.count(n.op_type())) quantized.insert(n.op_type());
    for (const auto& in : n.input()) ++uses[in];
    if (n.op_type() == "Constant") {
      for (auto& a : *n.mutable_attribute()) {
        if (a.name() == "value" && a.has_t()) constants[n.output(0)] = a.mutable_t();
      }
    }
  }
  info.quantized_ops.assign(quantized.begin(), quantized.end());

  for (const auto& v : g->input()) {
    if (!initializer_names.count(v.name())) info.inputs.push_back({v.name(), DimsOf(v)});
  }
  for (const auto& v : g->output()) info.outputs.push_back({v.name(), shapes[v.name()]});

  static const std::set<std::string> kBroadcastOps = {"Add", "Sub", "Mul", "Div"};
  for (const auto& n : g->node()) {
    if (!kBroadcastOps.count(n.op_type()) || n.input_size() != 2) continue;
    for (int i = 0; i < 2; ++i) {
      auto it = constants.find(n.input(i));
      if (it == constants.end()) continue;
      onnx::TensorProto& t = *it->second;
      std::vector<std::int64_t> cdims(t.dims().begin(), t.dims().end());
      std::int64_t numel = 1;
      for (auto d : cdims) numel *= d;
      const auto& other = shapes[n.input(1 - i)];
      // Scalars and same-rank operands are handled by OpenCV; only a lower-rank,
      // multi-element constant against a fully known shape needs expanding.
      if (numel <= 1 || cdims.size() >= other.size() || !AllStatic(other)) continue;
      if (uses[n.input(i)] != 1) continue;  // shared constant: leave it alone
      auto target = BroadcastShape(cdims, other);
      if (target.empty()) continue;
      // Per-channel constants ([C,1,1] against [1,C,H,W]) work in OpenCV and would grow by
      // H*W; the failing pattern (strides [1,N] against boxes [1,4,N]) grows by a small factor.
      std::int64_t numel_to = 1;
      for (auto d : target) numel_to *= d;
      if (numel_to > kMaxExpandFactor * numel || numel_to > kMaxExpandedElements) continue;
      if (ExpandFloatTensor(t, target)) {
        out.rewrites.push_back(n.op_type() + " '" + n.name() + "': constant " + n.input(i) + " " +
                               ShapeString(cdims) + " expanded to " + ShapeString(target));
      }
    }
  }
  if (out.rewrites.empty()) {
    out.bytes = bytes;
  } else if (!model.SerializeToString(&out.bytes)) {
    return InternalError("could not serialize the normalised ONNX model");
  }
  return out;
}

Result<int> DropInitializerInputs(std::string& bytes) {
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes) || !model.has_graph()) {
    return InvalidArgumentError("not a valid ONNX model (protobuf parse failed)");
  }
  onnx::GraphProto* g = model.mutable_graph();
  std::set<std::string> initializers;
  for (const auto& t : g->initializer()) initializers.insert(t.name());
  google::protobuf::RepeatedPtrField<onnx::ValueInfoProto> kept;
  int dropped = 0;
  for (const auto& v : g->input()) {
    if (initializers.count(v.name())) {
      ++dropped;
    } else {
      *kept.Add() = v;
    }
  }
  if (dropped == 0) return 0;
  g->mutable_input()->Swap(&kept);
  std::string out;
  if (!model.SerializeToString(&out)) {
    return InternalError("could not serialize the ONNX model");
  }
  bytes = std::move(out);
  return dropped;
}

std::vector<std::string> ParseUltralyticsNames(const std::string& text) {
  // {0: 'person', 1: 'bicycle', ...}; names may contain spaces, quotes are ' or ".
  std::vector<std::pair<int, std::string>> entries;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t colon = text.find(':', pos);
    if (colon == std::string::npos) break;
    size_t key_begin = text.find_last_of("{, ", colon - 1);
    key_begin = key_begin == std::string::npos ? 0 : key_begin + 1;
    const std::string key = text.substr(key_begin, colon - key_begin);
    const size_t q1 = text.find_first_of("'\"", colon);
    if (q1 == std::string::npos) break;
    const size_t q2 = text.find(text[q1], q1 + 1);
    if (q2 == std::string::npos) break;
    try {
      entries.emplace_back(std::stoi(key), text.substr(q1 + 1, q2 - q1 - 1));
    } catch (const std::exception&) {
      return {};
    }
    pos = q2 + 1;
  }
  std::vector<std::string> names;
  for (const auto& [id, name] : entries) {
    if (id < 0 || id > 100000) return {};
    if (static_cast<size_t>(id) >= names.size()) names.resize(static_cast<size_t>(id) + 1);
    names[static_cast<size_t>(id)] = name;
  }
  return names;
}

}  // namespace kadr::inference::detail
