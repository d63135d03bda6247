// Rewrites an ONNX detection model exported with a fixed batch of 1 into one with a dynamic
// batch dimension, so that kadr's micro-batching runs real batches (tests and benchmarks make
// such variants of the shared models; the files themselves are never committed).
//
// The rewrite, value-preserving for the YOLO-style graphs kadr runs (YOLOX, YOLOv8, YOLOv8-seg):
//   - the image input's first dimension and every output's first dimension become "batch";
//   - every Reshape whose target shape is a constant starting with 1 gets 0 there ("copy the
//     input's dimension": the batch) instead; Reshapes with allowzero=1 are refused;
//   - inferred value_info (shapes with the old batch of 1) is dropped.
// Graphs that hard-code the batch elsewhere (NanoDet's Resize scales, for example) are not
// fixed by this; the tool exits 1 if it finds no Reshape to rewrite and says so.
//
// Usage: make_dynamic_batch INPUT.onnx OUTPUT.onnx
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include <onnx/onnx_pb.h>

namespace {

// Sets a constant int64 shape tensor's first element from 1 to 0; false when it is not 1.
bool ZeroLeadingOne(onnx::TensorProto& t) {
  if (t.data_type() != onnx::TensorProto::INT64 || t.dims_size() != 1 || t.dims(0) < 1)
    return false;
  if (!t.raw_data().empty()) {
    std::string raw = t.raw_data();
    std::int64_t first = 0;
    std::memcpy(&first, raw.data(), sizeof first);
    if (first != 1) return false;
    first = 0;
    std::memcpy(raw.data(), &first, sizeof first);
    t.set_raw_data(raw);
    return true;
  }
  if (t.int64_data_size() < 1 || t.int64_data(0) != 1) return false;
  t.set_int64_data(0, 0);
  return true;
}

void SetBatchDim(onnx::ValueInfoProto& v) {
  auto* shape = v.mutable_type()->mutable_tensor_type()->mutable_shape();
  if (shape->dim_size() > 0) shape->mutable_dim(0)->set_dim_param("batch");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s INPUT.onnx OUTPUT.onnx\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  onnx::ModelProto model;
  if (!in || !model.ParseFromString(bytes.str()) || !model.has_graph()) {
    std::fprintf(stderr, "make_dynamic_batch: %s is not an ONNX model\n", argv[1]);
    return 1;
  }
  onnx::GraphProto* g = model.mutable_graph();
  std::set<std::string> initializer_names;
  std::map<std::string, onnx::TensorProto*> constants;
  for (auto& t : *g->mutable_initializer()) {
    initializer_names.insert(t.name());
    constants[t.name()] = &t;
  }
  for (auto& n : *g->mutable_node()) {
    if (n.op_type() != "Constant") continue;
    for (auto& a : *n.mutable_attribute()) {
      if (a.name() == "value" && a.has_t()) constants[n.output(0)] = a.mutable_t();
    }
  }
  for (auto& v : *g->mutable_input()) {
    if (!initializer_names.count(v.name())) SetBatchDim(v);
  }
  for (auto& v : *g->mutable_output()) SetBatchDim(v);
  g->clear_value_info();

  int rewritten = 0;
  std::set<const onnx::TensorProto*> done;
  for (const auto& n : g->node()) {
    if (n.op_type() != "Reshape" || n.input_size() < 2) continue;
    for (const auto& a : n.attribute()) {
      if (a.name() == "allowzero" && a.i() != 0) {
        std::fprintf(stderr, "make_dynamic_batch: Reshape '%s' has allowzero=1\n",
                     n.name().c_str());
        return 1;
      }
    }
    auto it = constants.find(n.input(1));
    if (it == constants.end()) continue;
    if (done.count(it->second) || ZeroLeadingOne(*it->second)) {
      done.insert(it->second);
      ++rewritten;
    }
  }
  if (rewritten == 0) {
    std::fprintf(stderr, "make_dynamic_batch: no constant Reshape with a leading 1 in %s\n",
                 argv[1]);
    return 1;
  }
  std::ofstream out(argv[2], std::ios::binary);
  if (!model.SerializeToOstream(&out)) {
    std::fprintf(stderr, "make_dynamic_batch: cannot write %s\n", argv[2]);
    return 1;
  }
  std::printf("%s: dynamic batch, %d Reshape(s) rewritten\n", argv[2], rewritten);
  return 0;
}
