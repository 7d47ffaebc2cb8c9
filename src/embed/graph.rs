//! An in-memory rewrite of weight-only int8 ONNX graphs, so ONNX Runtime keeps their weights
//! int8 instead of expanding them to fp32 when the session loads.
//!
//! all-mpnet-base-v2's `model_quantized.onnx` stores every MatMul weight as an int8
//! initializer followed by `Cast(to float)` and `Mul(per-column scale)`. ONNX Runtime
//! constant-folds that pair at load, so the session holds fp32 weights (0.9 GB RSS for a
//! 112 MB file). The same arithmetic written as one `DequantizeLinear(int8, scale, axis=1)` is
//! not folded: ONNX Runtime's QDQ handling keeps the weights int8 and runs the MatMuls on them
//! (measured in BENCHMARKS.md: ~0.35 GB after load, faster, pooled cosine >= 0.9998 to the
//! folded graph). Only that exact pattern is rewritten; any other graph is left as it is.
//!
//! A minimal protobuf walker (the ONNX messages are protobuf): only the fields the rewrite
//! needs are decoded, everything else (initializer data above all) is copied byte for byte.
//! Pure functions over bytes; depends on nothing outside this file.

use std::collections::{HashMap, HashSet};

/// ONNX TensorProto data types we look at.
const FLOAT: u64 = 1;
const INT8: u64 = 3;
/// ONNX AttributeProto type INT.
const ATTR_INT: u64 = 2;
/// Attribute types that carry subgraphs: names used inside them are not visible to us, so a
/// graph with any is left alone.
const ATTR_GRAPH: u64 = 5;
const ATTR_GRAPHS: u64 = 10;
/// Per-axis DequantizeLinear needs opset 13.
const MIN_OPSET: u64 = 13;

/// The result of [`weight_only_int8_to_dequantize`] when it changed something.
#[derive(Debug)]
pub(crate) struct Rewritten {
    /// The new model bytes.
    pub bytes: Vec<u8>,
    /// How many `Cast`+`Mul` weight expansions became `DequantizeLinear`.
    pub weights: usize,
}

/// Rewrites `Cast(int8 initializer [K, N] -> float) -> Mul(float initializer [N])`, feeding
/// only MatMul weight inputs, into `DequantizeLinear(int8, scale, axis=1)`. `Ok(None)` when the
/// graph has no such pattern (or something the rewrite does not handle safely, such as
/// subgraphs); `Err` only when the bytes are not a well-formed protobuf.
pub(crate) fn weight_only_int8_to_dequantize(model: &[u8]) -> Result<Option<Rewritten>, String> {
    let top = fields(model)?;
    let graphs: Vec<&Field> = top.iter().filter(|f| f.num == 7).collect();
    let [graph_field] = graphs.as_slice() else {
        return Ok(None);
    };
    let Wire::Bytes(graph_bytes) = graph_field.wire else {
        return Ok(None);
    };
    if default_opset(&top)? < MIN_OPSET {
        return Ok(None);
    }
    let graph = fields(graph_bytes)?;

    let mut inits: HashMap<&str, Tensor> = HashMap::new();
    let mut nodes: Vec<(usize, Node)> = Vec::new();
    let mut graph_outputs: HashSet<&str> = HashSet::new();
    for (i, f) in graph.iter().enumerate() {
        match (f.num, f.wire) {
            (1, Wire::Bytes(b)) => {
                let n = Node::parse(b)?;
                if n.has_subgraph {
                    return Ok(None);
                }
                nodes.push((i, n));
            }
            (5, Wire::Bytes(b)) => {
                let t = Tensor::parse(b)?;
                inits.insert(t.name, t);
            }
            (12, Wire::Bytes(b)) => {
                for vf in fields(b)? {
                    if let (1, Wire::Bytes(name)) = (vf.num, vf.wire) {
                        graph_outputs.insert(utf8(name)?);
                    }
                }
            }
            _ => {}
        }
    }

    // Who reads each value: (node position in `nodes`, input slot).
    let mut readers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (k, (_, n)) in nodes.iter().enumerate() {
        for (slot, input) in n.inputs.iter().enumerate() {
            readers.entry(input).or_default().push((k, slot));
        }
    }

    // Graph field index -> None (drop) or Some(new node bytes).
    let mut replace: HashMap<usize, Option<Vec<u8>>> = HashMap::new();
    for (cast_field, cast) in &nodes {
        if !cast.is_op("Cast") || cast.to != Some(FLOAT) || cast.inputs.len() != 1 {
            continue;
        }
        let (Some(q), [cast_out]) = (inits.get(cast.inputs[0]), cast.outputs.as_slice()) else {
            continue;
        };
        let [_, n] = q.dims.as_slice() else {
            continue;
        };
        if q.data_type != INT8 || graph_outputs.contains(cast_out) {
            continue;
        }
        let [(mul_k, slot)] = readers.get(cast_out).map(Vec::as_slice).unwrap_or_default() else {
            continue;
        };
        let (mul_field, mul) = &nodes[*mul_k];
        if !mul.is_op("Mul") || mul.inputs.len() != 2 {
            continue;
        }
        let [mul_out] = mul.outputs.as_slice() else {
            continue;
        };
        let scale_name = mul.inputs[1 - slot];
        let Some(scale) = inits.get(scale_name) else {
            continue;
        };
        if scale.data_type != FLOAT || scale.dims != [*n] || graph_outputs.contains(mul_out) {
            continue;
        }
        let users = readers.get(mul_out).map(Vec::as_slice).unwrap_or_default();
        let only_matmul_weights = !users.is_empty()
            && users
                .iter()
                .all(|(k, slot)| nodes[*k].1.is_op("MatMul") && *slot == 1);
        if !only_matmul_weights {
            continue;
        }
        replace.insert(*cast_field, None);
        replace.insert(
            *mul_field,
            Some(dequantize_node(
                &format!("{}_dequantize", mul.name),
                cast.inputs[0],
                scale_name,
                mul_out,
            )),
        );
    }
    let weights = replace.values().filter(|v| v.is_some()).count();
    if weights == 0 {
        return Ok(None);
    }

    let mut new_graph = Vec::with_capacity(graph_bytes.len());
    for (i, f) in graph.iter().enumerate() {
        match replace.get(&i) {
            None => new_graph.extend_from_slice(f.raw),
            Some(None) => {}
            Some(Some(node)) => put_bytes(&mut new_graph, 1, node),
        }
    }
    let mut bytes = Vec::with_capacity(model.len());
    for f in &top {
        if f.num == 7 {
            put_bytes(&mut bytes, 7, &new_graph);
        } else {
            bytes.extend_from_slice(f.raw);
        }
    }
    Ok(Some(Rewritten { bytes, weights }))
}

/// The version of the default ("" or "ai.onnx") operator set the model imports; 0 if none.
fn default_opset(top: &[Field]) -> Result<u64, String> {
    let mut version = 0;
    for f in top.iter().filter(|f| f.num == 8) {
        let Wire::Bytes(b) = f.wire else { continue };
        let (mut domain, mut v) = ("", 0);
        for of in fields(b)? {
            match (of.num, of.wire) {
                (1, Wire::Bytes(d)) => domain = utf8(d)?,
                (2, Wire::Varint(x)) => v = x,
                _ => {}
            }
        }
        if domain.is_empty() || domain == "ai.onnx" {
            version = version.max(v);
        }
    }
    Ok(version)
}

fn dequantize_node(name: &str, q: &str, scale: &str, out: &str) -> Vec<u8> {
    let mut axis = Vec::new();
    put_bytes(&mut axis, 1, b"axis");
    put_varint_field(&mut axis, 3, 1);
    put_varint_field(&mut axis, 20, ATTR_INT);
    let mut node = Vec::new();
    put_bytes(&mut node, 1, q.as_bytes());
    put_bytes(&mut node, 1, scale.as_bytes());
    put_bytes(&mut node, 2, out.as_bytes());
    put_bytes(&mut node, 3, name.as_bytes());
    put_bytes(&mut node, 4, b"DequantizeLinear");
    put_bytes(&mut node, 5, &axis);
    node
}

/// The parts of a NodeProto the rewrite reads.
struct Node<'a> {
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    name: &'a str,
    op_type: &'a str,
    domain: &'a str,
    /// Cast's `to` attribute.
    to: Option<u64>,
    has_subgraph: bool,
}

impl<'a> Node<'a> {
    fn parse(b: &'a [u8]) -> Result<Self, String> {
        let mut n = Node {
            inputs: Vec::new(),
            outputs: Vec::new(),
            name: "",
            op_type: "",
            domain: "",
            to: None,
            has_subgraph: false,
        };
        for f in fields(b)? {
            match (f.num, f.wire) {
                (1, Wire::Bytes(s)) => n.inputs.push(utf8(s)?),
                (2, Wire::Bytes(s)) => n.outputs.push(utf8(s)?),
                (3, Wire::Bytes(s)) => n.name = utf8(s)?,
                (4, Wire::Bytes(s)) => n.op_type = utf8(s)?,
                (7, Wire::Bytes(s)) => n.domain = utf8(s)?,
                (5, Wire::Bytes(a)) => {
                    let (mut name, mut ty, mut i) = ("", 0, None);
                    for af in fields(a)? {
                        match (af.num, af.wire) {
                            (1, Wire::Bytes(s)) => name = utf8(s)?,
                            (3, Wire::Varint(x)) => i = Some(x),
                            (20, Wire::Varint(x)) => ty = x,
                            // A graph-valued attribute (g = 6, graphs = 11) even without a
                            // type field.
                            (6 | 11, _) => ty = ATTR_GRAPH,
                            _ => {}
                        }
                    }
                    if ty == ATTR_GRAPH || ty == ATTR_GRAPHS {
                        n.has_subgraph = true;
                    }
                    if name == "to" {
                        n.to = i;
                    }
                }
                _ => {}
            }
        }
        Ok(n)
    }

    fn is_op(&self, op: &str) -> bool {
        self.op_type == op && (self.domain.is_empty() || self.domain == "ai.onnx")
    }
}

/// The parts of a TensorProto (an initializer) the rewrite reads.
struct Tensor<'a> {
    name: &'a str,
    data_type: u64,
    dims: Vec<u64>,
}

impl<'a> Tensor<'a> {
    fn parse(b: &'a [u8]) -> Result<Self, String> {
        let mut t = Tensor {
            name: "",
            data_type: 0,
            dims: Vec::new(),
        };
        for f in fields(b)? {
            match (f.num, f.wire) {
                (1, Wire::Varint(d)) => t.dims.push(d),
                (1, Wire::Bytes(packed)) => {
                    let mut pos = 0;
                    while pos < packed.len() {
                        t.dims.push(varint(packed, &mut pos)?);
                    }
                }
                (2, Wire::Varint(d)) => t.data_type = d,
                (8, Wire::Bytes(s)) => t.name = utf8(s)?,
                _ => {}
            }
        }
        Ok(t)
    }
}

#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed,
    Bytes(&'a [u8]),
}

/// One protobuf field: its number, its decoded value and its encoding (tag included).
struct Field<'a> {
    num: u64,
    wire: Wire<'a>,
    raw: &'a [u8],
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = varint(buf, &mut pos)?;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos = skip(buf, pos, 8)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| "length too large".to_string())?;
                let end = skip(buf, pos, len)?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            5 => {
                pos = skip(buf, pos, 4)?;
                Wire::Fixed
            }
            w => {
                return Err(format!(
                    "unsupported protobuf wire type {w} at byte {start}"
                ));
            }
        };
        out.push(Field {
            num: key >> 3,
            wire,
            raw: &buf[start..pos],
        });
    }
    Ok(out)
}

fn skip(buf: &[u8], pos: usize, len: usize) -> Result<usize, String> {
    pos.checked_add(len)
        .filter(|end| *end <= buf.len())
        .ok_or_else(|| format!("truncated protobuf at byte {pos}"))
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| format!("truncated varint at byte {pos}"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(format!("varint too long at byte {pos}"))
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "a name is not UTF-8".to_string())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, num: u64, v: u64) {
    put_varint(out, num << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    put_varint(out, (num << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, data_type: u64, dims: &[u64]) -> Vec<u8> {
        let mut t = Vec::new();
        for d in dims {
            put_varint_field(&mut t, 1, *d);
        }
        put_varint_field(&mut t, 2, data_type);
        put_bytes(&mut t, 8, name.as_bytes());
        // Stand-in raw data, copied through untouched.
        put_bytes(&mut t, 9, &[7u8; 12]);
        t
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], to: Option<u64>) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_bytes(&mut n, 1, i.as_bytes());
        }
        for o in outputs {
            put_bytes(&mut n, 2, o.as_bytes());
        }
        put_bytes(&mut n, 3, format!("{op}_{}", outputs[0]).as_bytes());
        put_bytes(&mut n, 4, op.as_bytes());
        if let Some(to) = to {
            let mut a = Vec::new();
            put_bytes(&mut a, 1, b"to");
            put_varint_field(&mut a, 3, to);
            put_varint_field(&mut a, 20, ATTR_INT);
            put_bytes(&mut n, 5, &a);
        }
        n
    }

    /// x [?, 4] -> MatMul(x, Cast(w_q)*w_s) -> y, plus an unrelated Cast of the input.
    fn model(opset: u64, scale_dims: &[u64], extra_reader: bool) -> Vec<u8> {
        let mut g = Vec::new();
        put_bytes(&mut g, 1, &node("Cast", &["w_q"], &["w_f"], Some(FLOAT)));
        put_bytes(&mut g, 1, &node("Mul", &["w_f", "w_s"], &["w"], None));
        put_bytes(&mut g, 1, &node("MatMul", &["x", "w"], &["y"], None));
        put_bytes(&mut g, 1, &node("Cast", &["x"], &["x_f"], Some(FLOAT)));
        if extra_reader {
            put_bytes(&mut g, 1, &node("Relu", &["w"], &["r"], None));
        }
        put_bytes(&mut g, 2, b"graph");
        put_bytes(&mut g, 5, &tensor("w_q", INT8, &[4, 3]));
        put_bytes(&mut g, 5, &tensor("w_s", FLOAT, scale_dims));
        let mut out = Vec::new();
        put_bytes(&mut out, 1, b"y");
        put_bytes(&mut g, 12, &out);
        let mut m = Vec::new();
        put_varint_field(&mut m, 1, 8);
        put_bytes(&mut m, 7, &g);
        let mut op = Vec::new();
        put_bytes(&mut op, 1, b"");
        put_varint_field(&mut op, 2, opset);
        put_bytes(&mut m, 8, &op);
        m
    }

    fn graph_nodes(model: &[u8]) -> Vec<(String, Vec<String>, Vec<String>)> {
        let top = fields(model).unwrap();
        let g = top.iter().find(|f| f.num == 7).unwrap();
        let Wire::Bytes(g) = g.wire else { panic!() };
        fields(g)
            .unwrap()
            .iter()
            .filter(|f| f.num == 1)
            .map(|f| {
                let Wire::Bytes(b) = f.wire else { panic!() };
                let n = Node::parse(b).unwrap();
                (
                    n.op_type.to_string(),
                    n.inputs.iter().map(|s| s.to_string()).collect(),
                    n.outputs.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn weight_expansion_becomes_one_dequantize_and_the_rest_is_kept() {
        let m = model(17, &[3], false);
        let r = weight_only_int8_to_dequantize(&m)
            .unwrap()
            .expect("rewritten");
        assert_eq!(r.weights, 1);
        let nodes = graph_nodes(&r.bytes);
        let ops: Vec<&str> = nodes.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(ops, ["DequantizeLinear", "MatMul", "Cast"]);
        assert_eq!(nodes[0].1, ["w_q", "w_s"]);
        assert_eq!(nodes[0].2, ["w"]);
        // The activation Cast is untouched, and so are the initializers and other fields.
        assert_eq!(nodes[2].1, ["x"]);
        let dq_field = fields(&r.bytes).unwrap();
        assert_eq!(dq_field.len(), 3, "ir_version, graph, opset_import");
        assert!(
            r.bytes.windows(12).any(|w| w == [7u8; 12]),
            "raw data copied"
        );
        // The axis attribute says per column.
        assert!(r.bytes.windows(4).any(|w| w == b"axis"));
    }

    #[test]
    fn anything_else_is_left_alone() {
        // Per-tensor scale, another reader of the expanded weight, too old an opset.
        for m in [
            model(17, &[1], false),
            model(17, &[3], true),
            model(12, &[3], false),
        ] {
            assert!(weight_only_int8_to_dequantize(&m).unwrap().is_none());
        }
        assert!(weight_only_int8_to_dequantize(b"").unwrap().is_none());
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let m = model(17, &[3], false);
        for cut in [1, m.len() / 2, m.len() - 1] {
            assert!(weight_only_int8_to_dequantize(&m[..cut]).is_err(), "{cut}");
        }
        assert!(
            weight_only_int8_to_dequantize(&[0x0b, 0x00]).is_err(),
            "group wire type"
        );
        assert!(weight_only_int8_to_dequantize(&[0xff; 11]).is_err());
    }
}
