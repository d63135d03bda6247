// Writes a tiny ONNX model in the Ultralytics YOLOv8 output layout, so the ONNX loading,
// graph normalisation and decoding path is tested without any downloaded model.
//
//   images [1,3,32,32] -> Conv(6 out, kernel 8, stride 8) -> [1,6,4,4] -> Reshape [1,6,16]
//   -> Mul by a [1,16] constant (all ones) -> output0 [1,6,16]
//
// Channels 0..3 (cx, cy, w, h) are constants from the Conv bias: a 16x16 box centred at
// (16, 16) in input pixels. Channel 4 ("bright") is the mean input value of the cell
// (weights 1/192) and channel 5 ("dark") is 1 minus it: a white image finds "bright",
// a black one finds "dark". The final Mul by a [1,16] constant reproduces the broadcast
// pattern that OpenCV 4.6 cannot run unmodified, so the normalisation is exercised too.
//
// Usage: make_tiny_onnx OUTPUT.onnx
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace {

void AddTensor(onnx::GraphProto& g, const std::string& name, const std::vector<int64_t>& dims,
               const std::vector<float>& values) {
  onnx::TensorProto* t = g.add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (auto d : dims) t->add_dims(d);
  for (float v : values) t->add_float_data(v);
}

void AddInt64Tensor(onnx::GraphProto& g, const std::string& name,
                    const std::vector<int64_t>& values) {
  onnx::TensorProto* t = g.add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(values.size()));
  for (auto v : values) t->add_int64_data(v);
}

void SetShape(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (auto d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT.onnx\n", argv[0]);
    return 2;
  }
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("kadr make_tiny_onnx");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(12);
  auto* names = model.add_metadata_props();
  names->set_key("names");
  names->set_value("{0: 'bright', 1: 'dark'}");

  onnx::GraphProto& g = *model.mutable_graph();
  g.set_name("tiny_yolov8");
  SetShape(g.add_input(), "images", {1, 3, 32, 32});
  SetShape(g.add_output(), "output0", {1, 6, 16});

  constexpr int kOut = 6;
  constexpr int kK = 8;
  std::vector<float> weights(kOut * 3 * kK * kK, 0.f);
  for (int i = 0; i < 3 * kK * kK; ++i) {
    weights[4 * 3 * kK * kK + i] = 1.f / (3 * kK * kK);
    weights[5 * 3 * kK * kK + i] = -1.f / (3 * kK * kK);
  }
  AddTensor(g, "conv.weight", {kOut, 3, kK, kK}, weights);
  AddTensor(g, "conv.bias", {kOut}, {16.f, 16.f, 16.f, 16.f, 0.f, 1.f});
  AddInt64Tensor(g, "shape", {1, kOut, 16});
  AddTensor(g, "ones", {1, 16}, std::vector<float>(16, 1.f));

  auto* conv = g.add_node();
  conv->set_op_type("Conv");
  conv->set_name("conv");
  conv->add_input("images");
  conv->add_input("conv.weight");
  conv->add_input("conv.bias");
  conv->add_output("features");
  auto* ks = conv->add_attribute();
  ks->set_name("kernel_shape");
  ks->set_type(onnx::AttributeProto::INTS);
  ks->add_ints(kK);
  ks->add_ints(kK);
  auto* st = conv->add_attribute();
  st->set_name("strides");
  st->set_type(onnx::AttributeProto::INTS);
  st->add_ints(kK);
  st->add_ints(kK);

  auto* reshape = g.add_node();
  reshape->set_op_type("Reshape");
  reshape->set_name("reshape");
  reshape->add_input("features");
  reshape->add_input("shape");
  reshape->add_output("flat");

  auto* mul = g.add_node();
  mul->set_op_type("Mul");
  mul->set_name("broadcast_mul");
  mul->add_input("flat");
  mul->add_input("ones");
  mul->add_output("output0");

  std::ofstream out(argv[1], std::ios::binary);
  if (!model.SerializeToOstream(&out)) {
    std::fprintf(stderr, "cannot write %s\n", argv[1]);
    return 1;
  }
  return 0;
}
