"""Generate the ONNX model-file fixtures of rnn-wgpu (tests/fixtures/onnx_models/), checked by
tests/onnx_model.rs. CI needs no Python: everything here is committed.

How to run (from the repository root; torch only for the `torch` group):

    python3 -m venv /tmp/onnxvenv
    /tmp/onnxvenv/bin/pip install onnx onnxruntime numpy torch
    /tmp/onnxvenv/bin/python scripts/gen_onnx_models.py

Every case is a directory `<group>/<case>/` holding `model.onnx` and `test_data_set_0/` with
`input_<k>.pb` and `output_<k>.pb` (serialized TensorProto, named after the graph's inputs and
outputs, in graph order): the layout of ONNX's own backend node tests. Groups:

  node   ONNX's backend node tests for LSTM, GRU and RNN, generated from the onnx package's own
         case definitions (onnx.backend.test.case.node.{lstm,gru,rnn}) exactly as
         `python -m onnx.backend.test.cmd_tools generate-data` writes them (the pip wheel does
         not ship the generated data). Their weights W, R, B (P) are graph *inputs*, so the
         Rust test binds them with `onnx::load_model_with`. The expected outputs are the
         package's numpy reference; onnxruntime is checked here to agree with them.
  attrs  single nodes made here with onnx.helper, one attribute each at a non-default value or
         left to its default where the default is what is under test (activation alpha/beta
         defaults, hidden_size inferred from R, linear_before_reset = 0), plus layout 1,
         sequence_lens, and constant (initializer) initial states. Expected outputs: onnxruntime.
  torch  multi-layer nn.LSTM / nn.GRU / nn.RNN exported by torch.onnx.export (the TorchScript
         exporter, dynamo=False, which writes ONNX LSTM/GRU/RNN nodes with the standard glue).
         Expected outputs: onnxruntime, checked here against torch itself.
  bad    graphs the loader must refuse (a read-out MatMul after the node, no recurrent node,
         weights computed at run time, an unknown attribute, a bad attribute value): model.onnx
         only; the Rust test checks the error names the node.
  saved  models written by the crate's own `onnx::save_model_with` (the script runs
         `cargo test --release --test onnx_model -- --ignored write_saved_models` to write them,
         from the crate's seeded initialiser), then run here by onnxruntime: this is the check
         that what the crate writes runs in onnxruntime. The Rust test re-saves each loaded model
         and requires the same bytes, so the committed files are what the current code writes.

Tolerances: onnxruntime's float32 against the numpy reference / torch at ATOL below (both are
float32 implementations of the same equations on these tiny sizes; observed <= 1e-6).
Deterministic: seeded numpy generators, torch.manual_seed, onnxruntime on one thread.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "onnx_models")
OPSET = 14
ATOL = 1e-5


def session(model_bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def write_case(group, name, model, inputs, outputs):
    """model: ModelProto to write, or None to keep the model.onnx there (the crate's own
    bytes); inputs / outputs: lists of (name, array) in graph order."""
    d = os.path.join(OUT, group, name)
    if model is None:
        shutil.rmtree(os.path.join(d, "test_data_set_0"), ignore_errors=True)
    else:
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    if model is not None:
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(model.SerializeToString())
    for kind, items in (("input", inputs), ("output", outputs)):
        for k, (n, a) in enumerate(items):
            path = os.path.join(d, "test_data_set_0", f"{kind}_{k}.pb")
            with open(path, "wb") as f:
                f.write(numpy_helper.from_array(np.asarray(a), n).SerializeToString())


def run_ort(model, feeds):
    s = session(model.SerializeToString())
    names = [o.name for o in model.graph.output]
    return list(zip(names, s.run(names, dict(feeds))))


def reference_run(model, feeds):
    from onnx.reference import ReferenceEvaluator

    names = [o.name for o in model.graph.output]
    return list(zip(names, ReferenceEvaluator(model).run(names, dict(feeds))))


def check_close(what, got, want, atol=ATOL):
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)))) if np.size(want) else 0.0
    if not err <= atol:
        sys.exit(f"{what}: max |diff| {err} > {atol}")
    return err


# ---------------------------------------------------------------------------------------------
# node: ONNX's own backend node tests.

def gen_node():
    from onnx.backend.test.case import node as node_cases

    cases = [c for c in node_cases.collect_testcases()
             if c.model is not None and c.model.graph.node
             and c.model.graph.node[0].op_type in ("LSTM", "GRU", "RNN")]
    for c in cases:
        (inputs, outputs), = c.data_sets
        g = c.model.graph
        ins = [(g.input[k].name, a) for k, a in enumerate(inputs)]
        outs = [(g.output[k].name, a) for k, a in enumerate(outputs)]
        layout = [a.i for a in g.node[0].attribute if a.name == "layout"]
        if layout == [1]:
            # onnxruntime refuses layout = 1 ("Batchwise recurrent operations (layout == 1)
            # are not supported"); onnx's ReferenceEvaluator checks the case's numpy instead.
            got = reference_run(c.model, ins)
            check = "onnx.reference"
        else:
            got = run_ort(c.model, ins)
            check = "onnxruntime"
        worst = max(check_close(f"node/{c.name} {n}: {check} vs the case's numpy", a, w)
                    for (n, a), (_, w) in zip(got, outs))
        write_case("node", c.name, c.model, ins, outs)
        print(f"node/{c.name}: {len(ins)} inputs, {check} vs the case's numpy {worst:.2e}")
    return len(cases)


# ---------------------------------------------------------------------------------------------
# attrs: attributes and defaults, one node each.

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def attr_case(name, op, I, H, B, T, seed, dirs=1, layout=0, bias=True, peepholes=False,
              seq_lens=None, initial="none", attrs=None):
    """initial: "none", "input" (graph inputs) or "const" (initializers)."""
    rng = np.random.default_rng(seed)
    G = GATES[op]
    u = lambda *s: rng.uniform(-0.6, 0.6, s).astype(np.float32)
    W, R = u(dirs, G * H, I), u(dirs, G * H, H)
    X = rng.uniform(-1.5, 1.5, (B, T, I) if layout else (T, B, I)).astype(np.float32)
    state = (B, dirs, H) if layout else (dirs, B, H)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    node_in = ["X", "W", "R", "", "", "", "", ""]
    feeds = [("X", X)]
    graph_in = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(X.shape))]
    if bias:
        inits.append(numpy_helper.from_array(u(dirs, 2 * G * H), "B"))
        node_in[3] = "B"
    if seq_lens is not None:
        lens = np.array(seq_lens, np.int32)
        graph_in.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
        feeds.append(("sequence_lens", lens))
        node_in[4] = "sequence_lens"
    states = ["initial_h"] + (["initial_c"] if op == "LSTM" else [])
    for k, s in enumerate(states):
        v = u(*state)
        if initial == "input":
            graph_in.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, list(state)))
            feeds.append((s, v))
            node_in[5 + k] = s
        elif initial == "const":
            inits.append(numpy_helper.from_array(v, s))
            node_in[5 + k] = s
    if peepholes:
        inits.append(numpy_helper.from_array(u(dirs, 3 * H), "P"))
        node_in[7] = "P"
    while node_in and node_in[-1] == "":
        node_in.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    kw = dict(attrs or {})
    kw["hidden_size"] = H
    if dirs == 2:
        kw["direction"] = "bidirectional"
    if layout:
        kw["layout"] = 1
    node = helper.make_node(op, node_in, outs, name=f"{name}_node", **kw)
    out_shapes = {"Y": [B, T, dirs, H] if layout else [T, dirs, B, H]}
    out_info = [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shapes.get(o, list(state)))
                for o in outs]
    graph = helper.make_graph([node], name, graph_in, out_info, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    if layout:
        # onnxruntime runs layout 0 only: run the same node in layout 0 on transposed inputs
        # and transpose its outputs back ([T, B, I] <-> [B, T, I], [D, B, H] <-> [B, D, H],
        # Y [T, D, B, H] -> [B, T, D, H]), which is how the operator defines layout 1. (onnx's
        # ReferenceEvaluator runs layout 1 but ignores clip, sequence_lens, input_forget and
        # the activations, so it cannot check these cases.)
        twin_node = helper.make_node(op, node_in, outs, name=f"{name}_node",
                                     **{k: v for k, v in kw.items() if k != "layout"})
        twin_in = []
        twin_feeds = []
        for (n, a) in feeds:
            if n == "X" or n.startswith("initial_"):
                a = np.ascontiguousarray(np.swapaxes(a, 0, 1))
            twin_feeds.append((n, a))
            twin_in.append(helper.make_tensor_value_info(
                n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT, list(a.shape)))
        twin_inits = []
        for t in inits:
            a = numpy_helper.to_array(t)
            if t.name.startswith("initial_"):
                a = np.ascontiguousarray(np.swapaxes(a, 0, 1))
            twin_inits.append(numpy_helper.from_array(a, t.name))
        twin = helper.make_model(
            helper.make_graph([twin_node], name + "_layout0", twin_in,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                              initializer=twin_inits),  # shapes left to onnxruntime
            opset_imports=[helper.make_opsetid("", OPSET)])
        twin.ir_version = 7
        got = []
        for n, a in run_ort(twin, twin_feeds):
            got.append((n, np.ascontiguousarray(a.transpose(2, 0, 1, 3) if n == "Y" else np.swapaxes(a, 0, 1))))
    else:
        got = run_ort(model, feeds)
    write_case("attrs", name, model, feeds, got)
    print(f"attrs/{name}: {op} dirs={dirs} layout={layout} {kw}")


def gen_attrs():
    # LSTM: bidirectional, batch-first, clip, input_forget, peepholes, sequence_lens, states
    # fed; HardSigmoid and LeakyRelu without alpha/beta take ONNX's 0.2 / 0.5 and 0.01.
    attr_case("lstm_bidir_layout1", "LSTM", I=3, H=4, B=3, T=5, seed=1, dirs=2, layout=1,
              peepholes=True, seq_lens=[5, 2, 4], initial="input",
              attrs=dict(clip=2.0, input_forget=1,
                         activations=["HardSigmoid", "LeakyRelu", "Tanh"] * 2))
    # LSTM, reverse, constant initial states (initializers), no bias, default activations
    # spelled out for one direction only.
    attr_case("lstm_reverse_const_state", "LSTM", I=2, H=3, B=2, T=4, seed=2, bias=False,
              initial="const", attrs=dict(direction="reverse", activations=["Sigmoid", "Tanh", "Tanh"]))
    # GRU with linear_before_reset left at its default 0 (reset before) and an Elu candidate
    # without alpha (ONNX default 1.0). (hidden_size stays: onnxruntime requires it, though
    # the operator makes it optional.)
    attr_case("gru_defaults_elu", "GRU", I=3, H=5, B=2, T=4, seed=3,
              attrs=dict(activations=["Sigmoid", "Elu"]))
    # GRU, reverse, PyTorch's reset-after, clip, states fed, layout 1; explicit alpha/beta,
    # consumed in order by the functions that take them (LeakyRelu alpha 0.2, HardSigmoid
    # alpha 0.35 and beta 0.6).
    attr_case("gru_reverse_lbr_clip", "GRU", I=4, H=3, B=3, T=5, seed=4, layout=1,
              initial="input", seq_lens=[3, 5, 1],
              attrs=dict(direction="reverse", linear_before_reset=1, clip=1.0,
                         activations=["LeakyRelu", "HardSigmoid"],
                         activation_alpha=[0.2, 0.35], activation_beta=[0.6]))
    # RNN, bidirectional, LeakyRelu without alpha (ONNX default 0.01), sequence lengths.
    attr_case("rnn_bidir_leakyrelu", "RNN", I=3, H=4, B=3, T=4, seed=5, dirs=2,
              seq_lens=[4, 1, 3], initial="input", attrs=dict(activations=["LeakyRelu", "LeakyRelu"]))
    return 5


# ---------------------------------------------------------------------------------------------
# torch: multi-layer modules exported by torch.onnx.export.

def gen_torch():
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    cases = [
        # name, module, batch_first, with initial state, (T, B)
        ("lstm_2layer_h0", lambda: torch.nn.LSTM(3, 5, num_layers=2), False, True, (6, 3)),
        ("lstm_2layer_bidir", lambda: torch.nn.LSTM(4, 3, num_layers=2, bidirectional=True), False, False, (5, 2)),
        ("gru_3layer_bidir_batch_first", lambda: torch.nn.GRU(3, 4, num_layers=3, bidirectional=True, batch_first=True), True, True, (4, 3)),
        ("gru_2layer", lambda: torch.nn.GRU(2, 6, num_layers=2), False, False, (7, 2)),
        ("rnn_relu_2layer_batch_first", lambda: torch.nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True), True, True, (5, 2)),
    ]
    for k, (name, make, batch_first, with_state, (T, B)) in enumerate(cases):
        torch.manual_seed(100 + k)
        m = make().eval()
        I, H, L = m.input_size, m.hidden_size, m.num_layers
        D = 2 if m.bidirectional else 1
        x = torch.randn((B, T, I) if batch_first else (T, B, I))
        lstm = isinstance(m, torch.nn.LSTM)
        args, in_names = (x,), ["X"]
        dyn = {"X": {0: "B", 1: "T"} if batch_first else {0: "T", 1: "B"}}
        if with_state:
            h0 = torch.randn(L * D, B, H) * 0.5
            if lstm:
                c0 = torch.randn(L * D, B, H) * 0.5
                args, in_names = (x, (h0, c0)), ["X", "h0", "c0"]
                dyn.update(h0={1: "B"}, c0={1: "B"})
            else:
                args, in_names = (x, h0), ["X", "h0"]
                dyn.update(h0={1: "B"})
        out_names = ["Y", "h_n"] + (["c_n"] if lstm else [])
        path = os.path.join("/tmp", f"rnn_wgpu_{name}.onnx")
        torch.onnx.export(m, args, path, input_names=in_names, output_names=out_names,
                          opset_version=OPSET, dynamo=False, dynamic_axes=dyn)
        model = onnx.load(path)
        with torch.no_grad():
            y, state = m(*args)
        want = [y] + (list(state) if lstm else [state])
        flat_in = [x] + ([a for a in args[1]] if lstm and with_state else list(args[1:]))
        feeds = [(n, t.numpy()) for n, t in zip(in_names, flat_in)]
        got = run_ort(model, feeds)
        worst = max(check_close(f"torch/{name} {n}: onnxruntime vs torch", a, w.numpy())
                    for (n, a), w in zip(got, want))
        write_case("torch", name, model, feeds, got)
        ops = sorted({n.op_type for n in model.graph.node})
        print(f"torch/{name}: onnxruntime vs torch {worst:.2e}; ops {ops}")
    return len(cases)


# ---------------------------------------------------------------------------------------------
# saved: what the crate's save_model writes, run by onnxruntime.

def gen_saved():
    d = os.path.join(OUT, "saved")
    os.makedirs(d, exist_ok=True)
    subprocess.run(["cargo", "test", "--release", "--test", "onnx_model", "--",
                    "--ignored", "--exact", "write_saved_models"], cwd=ROOT, check=True)
    n = 0
    for case in sorted(os.listdir(d)):
        model = onnx.load(os.path.join(d, case, "model.onnx"))
        onnx.checker.check_model(model, full_check=True)
        rng = np.random.default_rng(1000 + n)
        feeds, T, B = [], 5, 3
        dims = {}
        for v in model.graph.input:
            shape = []
            for dd in v.type.tensor_type.shape.dim:
                shape.append({"T": T, "B": B}[dd.dim_param] if dd.dim_param else dd.dim_value)
            if v.name == "sequence_lens":
                feeds.append((v.name, np.array([5, 2, 4][:B], np.int32)))
            else:
                feeds.append((v.name, rng.uniform(-1, 1, shape).astype(np.float32)))
            dims[v.name] = shape
        got = run_ort(model, feeds)
        write_case("saved", case, None, feeds, got)
        print(f"saved/{case}: inputs {dims}, outputs {[(nm, a.shape) for nm, a in got]}")
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# bad: graphs the loader must refuse, each with the node it must name (model.onnx only).

def gen_bad():
    rng = np.random.default_rng(7)
    H, I = 3, 2
    W = numpy_helper.from_array(rng.standard_normal((1, 4 * H, I)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(np.float32), "R")
    M = numpy_helper.from_array(rng.standard_normal((H, 2)).astype(np.float32), "M")
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])
    out = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
    lstm = helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h"], name="lstm", hidden_size=H)
    cases = {
        # A read-out after the recurrent node: the graph output comes from a MatMul.
        "readout_matmul": ([lstm, helper.make_node("MatMul", ["Y_h", "M"], ["logits"], name="readout")],
                           [x], [out("logits")], [W, R, M]),
        # No recurrent node at all.
        "no_recurrent_node": ([helper.make_node("Relu", ["X"], ["Z"], name="relu")], [x], [out("Z")], []),
        # W computed at run time (a graph input that is not bound).
        "runtime_weights": ([lstm], [x, helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 4 * H, I])],
                            [out("Y_h")], [R]),
        # An attribute the operator does not have.
        "unknown_attribute": ([helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h"], name="lstm",
                                                hidden_size=H, output_sequence=1)], [x], [out("Y_h")], [W, R]),
        # A bad direction value.
        "bad_direction": ([helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h"], name="lstm",
                                            hidden_size=H, direction="sideways")], [x], [out("Y_h")], [W, R]),
    }
    for name, (nodes, ins, outs, inits) in cases.items():
        model = helper.make_model(helper.make_graph(nodes, name, ins, outs, initializer=inits),
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        d = os.path.join(OUT, "bad", name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(model.SerializeToString())
        print(f"bad/{name}")
    return len(cases)


if __name__ == "__main__":
    groups = sys.argv[1:] or ["node", "attrs", "torch", "bad", "saved"]
    print("onnx", onnx.__version__, "onnxruntime", ort.__version__)
    for g in groups:
        count = {"node": gen_node, "attrs": gen_attrs, "torch": gen_torch, "bad": gen_bad,
                 "saved": gen_saved}[g]()
        print(f"== {g}: {count} cases")
