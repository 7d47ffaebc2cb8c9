//! Checking a model folder before it is installed: its tokenizer loads, each ONNX graph takes
//! the inputs our loader feeds, and each graph runs and gives vectors of one width.

use super::Error;
use crate::embed::{self, Embedder, OnnxEmbedder, OnnxOptions};
use std::path::{Path, PathBuf};

/// The inputs `embed::OnnxEmbedder` (fastembed) feeds a graph: the first two always, the
/// third when the graph asks for it.
const SUPPORTED_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// What [`validate`] measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// The vector length every graph gave for a probe text.
    pub dimensions: usize,
    /// The graphs checked, relative to the folder.
    pub graphs: Vec<PathBuf>,
}

/// The checks that need no ONNX Runtime and read no graph: the tokenizer files are there and
/// `tokenizer.json` loads, and there is at least one graph under `onnx/`. Cheap, so a broken
/// folder is refused before anything is copied.
pub fn precheck(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a folder (expected a model folder in the Hugging Face layout)",
            dir.display()
        )));
    }
    for required in ["tokenizer.json", "tokenizer_config.json"] {
        if !dir.join(required).is_file() {
            return Err(Error::Invalid(format!(
                "{} has no {required} (expected the Hugging Face layout: tokenizer.json, \
                 tokenizer_config.json, config.json and the graph under onnx/)",
                dir.display()
            )));
        }
    }
    tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
        Error::Invalid(format!(
            "{}: tokenizer.json does not load: {e}",
            dir.display()
        ))
    })?;
    let graphs = embed::graphs_in(dir);
    if graphs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} has no ONNX graph under onnx/ (expected onnx/model.onnx or \
             onnx/model_quantized.onnx)",
            dir.display()
        )));
    }
    Ok(graphs)
}

/// Every check: [`precheck`], then for each graph its inputs (read from the graph) and one
/// probe embedding through the same loader the server uses. All graphs must give vectors of
/// one width, and that width must be the one `config.json` declares, if it declares one.
/// Blocking (loads every graph): seconds per graph.
pub fn validate(dir: &Path, ort: &Path, max_length: usize) -> Result<Validated, Error> {
    let graphs = precheck(dir)?;
    let env = embed::ort_environment(ort).map_err(|e| Error::Usage(e.to_string()))?;
    let declared = super::declared_dimensions(dir);
    let mut dimensions = None;
    for graph in &graphs {
        let path = dir.join(graph);
        check_inputs(&env, &path)?;
        let model = OnnxEmbedder::load_with(
            dir,
            ort,
            &OnnxOptions {
                batch_size: 1,
                max_length,
                onnx_file: Some(graph.clone()),
                threads: None,
                // One session is enough to prove the graph runs.
                sessions: Some(1),
                ..OnnxOptions::default()
            },
        )
        .map_err(|e| {
            Error::Invalid(format!(
                "{}: graph {} does not run: {e}",
                dir.display(),
                graph.display()
            ))
        })?;
        let dims = model.dimensions();
        if let Some(d) = declared.filter(|d| *d != dims) {
            return Err(Error::Invalid(format!(
                "{}: graph {} gives {dims}-dimensional vectors but config.json declares \
                 hidden_size {d}",
                dir.display(),
                graph.display()
            )));
        }
        match dimensions {
            Some(first) if first != dims => {
                return Err(Error::Invalid(format!(
                    "{}: graph {} gives {dims}-dimensional vectors, the others {first}: they \
                     are not the same model",
                    dir.display(),
                    graph.display()
                )));
            }
            _ => dimensions = Some(dims),
        }
    }
    Ok(Validated {
        dimensions: dimensions.unwrap_or(0),
        graphs,
    })
}

/// The graph's inputs must be ones the loader feeds, and include the two it always feeds.
/// Read from a session without graph optimisation (the cheapest way to parse it).
fn check_inputs(env: &ort::environment::Environment, path: &Path) -> Result<(), Error> {
    let invalid = |e: String| {
        Error::Invalid(format!(
            "{} is not a loadable ONNX graph: {e}",
            path.display()
        ))
    };
    let session = ort::session::Session::builder(env)
        .map_err(|e| invalid(e.to_string()))?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Disable)
        .map_err(|e| invalid(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| invalid(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| invalid(e.to_string()))?;
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let unsupported: Vec<&str> = inputs
        .iter()
        .copied()
        .filter(|i| !SUPPORTED_INPUTS.contains(i))
        .collect();
    let missing: Vec<&str> = SUPPORTED_INPUTS[..2]
        .iter()
        .copied()
        .filter(|i| !inputs.contains(i))
        .collect();
    if unsupported.is_empty() && missing.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{} takes the inputs [{}]; a sentence-embedding graph must take input_ids and \
         attention_mask (and optionally token_type_ids){}",
        path.display(),
        inputs.join(", "),
        if unsupported.is_empty() {
            String::new()
        } else {
            format!(", not {}", unsupported.join(", "))
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precheck_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = precheck(&dir.path().join("nothing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a folder"), "{err}");
        let err = precheck(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has no tokenizer.json"), "{err}");
        std::fs::write(dir.path().join("tokenizer.json"), "not json").unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
        let err = precheck(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json does not load"), "{err}");
    }

    #[test]
    fn the_real_model_validates_and_a_wrong_graph_does_not() {
        let Some((model, ort)) = crate::test_model::model_and_runtime(
            "the_real_model_validates_and_a_wrong_graph_does_not",
        ) else {
            return;
        };
        // Copy only the int8 graph (fast) next to the real tokenizer files.
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("mini");
        std::fs::create_dir_all(m.join("onnx")).unwrap();
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "config.json",
            "special_tokens_map.json",
        ] {
            std::fs::copy(model.join(f), m.join(f)).unwrap();
        }
        std::fs::copy(
            model.join("onnx/model_quantized.onnx"),
            m.join("onnx/model_quantized.onnx"),
        )
        .unwrap();
        let v = validate(&m, &ort, 128).unwrap();
        assert_eq!(v.dimensions, 384);
        assert_eq!(v.graphs, vec![PathBuf::from("onnx/model_quantized.onnx")]);

        // A file that is not an ONNX graph is named in the error.
        std::fs::write(m.join("onnx/model.onnx"), b"not a graph").unwrap();
        let err = validate(&m, &ort, 128).unwrap_err().to_string();
        assert!(
            err.contains("onnx/model.onnx") && err.contains("not a loadable ONNX graph"),
            "{err}"
        );
    }
}
