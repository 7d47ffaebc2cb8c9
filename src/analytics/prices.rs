//! The operator's price table: US dollars per million prompt (input) and completion
//! (output) tokens, per model. Written `model=input:output,model=input:output`
//! (`ANALYTICS_PRICES`); a model missing from it costs nothing and is reported unpriced.

use std::collections::BTreeMap;

/// The table the server starts with when the operator sets none (OpenAI list prices).
pub const DEFAULT_PRICES: &str = "gpt-4o-mini=0.15:0.60,gpt-4o=2.50:10.00,gpt-4.1=2.00:8.00,gpt-4.1-mini=0.40:1.60,gpt-4.1-nano=0.10:0.40,gpt-3.5-turbo=0.50:1.50";

/// One model's price.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

/// Model name -> price.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices(pub BTreeMap<String, Price>);

impl Prices {
    /// Parses `model=input:output,...`; an empty text is an empty table.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("`{entry}` is not model=input:output (USD per million tokens)");
            let (model, price) = entry.rsplit_once('=').ok_or_else(bad)?;
            let (i, o) = price.split_once(':').ok_or_else(bad)?;
            let num = |v: &str| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
            };
            let (Some(i), Some(o)) = (num(i), num(o)) else {
                return Err(bad());
            };
            let model = model.trim();
            if model.is_empty() {
                return Err(bad());
            }
            out.insert(
                model.to_string(),
                Price {
                    input_per_million: i,
                    output_per_million: o,
                },
            );
        }
        Ok(Prices(out))
    }

    /// The cost of tokens of `model`; `None` when the model has no price.
    pub fn cost(&self, model: &str, prompt: i64, completion: i64) -> Option<f64> {
        let p = self.0.get(model)?;
        Some(
            (prompt.max(0) as f64 * p.input_per_million
                + completion.max(0) as f64 * p.output_per_million)
                / 1_000_000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_prices_tokens() {
        let p = Prices::parse("m1=1:2, vendor/m=2=0.5:0").unwrap();
        assert_eq!(p.cost("m1", 1_000_000, 500_000), Some(2.0));
        assert_eq!(p.cost("vendor/m=2", 2_000_000, 9), Some(1.0));
        assert_eq!(p.cost("other", 1, 1), None);
        assert!(Prices::parse("m1=1").is_err());
        assert!(Prices::parse("m1=-1:2").is_err());
        assert!(Prices::parse(DEFAULT_PRICES).is_ok());
        assert_eq!(Prices::parse("").unwrap(), Prices::default());
    }
}
