//! Step 3 of loading a policy: the tree is checked against the JSON Schema generated from the raw
//! types, so the schema editors use and the validator can never disagree — unknown keys (with a
//! did-you-mean), missing required keys, wrong types, unknown enum values, minimums — and what
//! does not fit is removed so later steps still report their own problems.
//!
//! Hand-written rather than a JSON-Schema crate: every problem needs the TOML file's
//! line:column and a hint, which the maintained validators (`jsonschema`, `boon`) cannot give
//! from a `toml::Value` tree (they report JSON pointers into JSON), and they would add a few
//! dozen dependencies for the handful of keywords schemars emits here (type, properties,
//! required, additionalProperties, enum/oneOf/anyOf, minimum, $ref).

use super::*;

impl Cx<'_> {
    // -- step 3: check the tree against the schema, removing what does not fit --------------

    /// Returns false when `value` does not fit `schema` (and the caller should drop it).
    pub(super) fn check(
        &mut self,
        value: &mut toml::Value,
        schema: &Json,
        root: &Json,
        path: &str,
    ) -> bool {
        let schema = deref(schema, root);
        if self.broken.contains(path) {
            return false;
        }
        if let Some(alts) = schema.get("oneOf").or_else(|| schema.get("anyOf")) {
            return self.check_enum(value, alts, path);
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array) {
            return self.check_enum(value, &Json::Array(allowed.clone()), path);
        }
        // `"type"` is one name, or a list of names (a key that takes either, like
        // `stale_after = 2` or `"8d"`).
        let types: Vec<&str> = match schema.get("type") {
            Some(Json::String(t)) => vec![t.as_str()],
            Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
            _ => vec![""],
        };
        let fits = types.iter().any(|ty| {
            matches!(
                (*ty, &*value),
                ("string", toml::Value::String(_))
                    | ("integer", toml::Value::Integer(_))
                    | ("number", toml::Value::Integer(_) | toml::Value::Float(_))
                    | ("boolean", toml::Value::Boolean(_))
                    | ("array", toml::Value::Array(_))
                    | ("object", toml::Value::Table(_))
                    | ("", _)
            )
        });
        if !fits {
            let want = types
                .iter()
                .map(|ty| match *ty {
                    "string" => "a string",
                    "integer" => "an integer",
                    "number" => "a number",
                    "boolean" => "true or false",
                    "array" => "an array",
                    _ => "a table",
                })
                .collect::<Vec<_>>()
                .join(" or ");
            self.bad(
                path,
                format!("{} must be {want}, not {}", field(path), type_name(value)),
                None,
            );
            return false;
        }
        match value {
            toml::Value::Integer(n) => {
                if let Some(min) = schema.get("minimum").and_then(Json::as_i64)
                    && *n < min
                {
                    self.bad(
                        path,
                        format!("{} must be at least {min}", field(path)),
                        None,
                    );
                    return false;
                }
                if schema.get("format").and_then(Json::as_str) == Some("uint32")
                    && *n > i64::from(u32::MAX)
                {
                    self.bad(path, format!("{} is too large", field(path)), None);
                    return false;
                }
            }
            toml::Value::Array(items) => {
                let item_schema = schema.get("items").cloned().unwrap_or(Json::Bool(true));
                let mut keep = Vec::with_capacity(items.len());
                for (i, item) in items.iter_mut().enumerate() {
                    keep.push(self.check(item, &item_schema, root, &format!("{path}[{i}]")));
                }
                // Keep indices stable for arrays of tables (positions are indexed by them);
                // other arrays just lose the bad items.
                let is_tables = items.iter().all(toml::Value::is_table);
                if !is_tables {
                    let mut flags = keep.iter();
                    items.retain(|_| *flags.next().unwrap_or(&true));
                } else {
                    for (item, ok) in items.iter_mut().zip(keep) {
                        if !ok {
                            *item = toml::Value::Boolean(false); // a tombstone, skipped later
                        }
                    }
                }
            }
            toml::Value::Table(table) => {
                let ok = self.check_table(table, schema, root, path);
                if !ok {
                    // A required key is missing or broken: drop the table without a second
                    // problem, and let later checks know it was there.
                    self.broken.insert(path.to_string());
                }
                return ok;
            }
            _ => {}
        }
        true
    }

    pub(super) fn check_enum(&mut self, value: &toml::Value, alts: &Json, path: &str) -> bool {
        let allowed: Vec<&str> = alts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("const").and_then(Json::as_str).or_else(|| a.as_str()))
            .collect();
        let listed = allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        match value {
            toml::Value::String(s) if allowed.contains(&s.as_str()) => true,
            toml::Value::String(s) => {
                // A plain word is echoed; anything else may be a secret a broken line ran into
                // (`kind = "webhook` followed by the url's text), so it is only described.
                let plain = s.len() <= 40
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                let given = if plain {
                    format!("{s:?}")
                } else {
                    format!("a value of {} characters (not shown)", s.chars().count())
                };
                self.bad(
                    path,
                    format!("{} must be one of {listed}, not {given}", field(path)),
                    did_you_mean(s, &allowed),
                );
                false
            }
            other => {
                self.bad(
                    path,
                    format!(
                        "{} must be one of {listed}, not {}",
                        field(path),
                        type_name(other)
                    ),
                    None,
                );
                false
            }
        }
    }

    pub(super) fn check_table(
        &mut self,
        table: &mut toml::Table,
        schema: &Json,
        root: &Json,
        path: &str,
    ) -> bool {
        let props = schema.get("properties").and_then(Json::as_object);
        let extra = schema.get("additionalProperties");
        let names: Vec<&str> = props
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut ok = true;
        let keys: Vec<String> = table.keys().cloned().collect();
        for key in keys {
            let p = join(path, &key);
            let sub = match props.and_then(|p| p.get(&key)) {
                Some(sub) => sub.clone(),
                None => match extra {
                    Some(Json::Bool(false)) => {
                        let hint = did_you_mean(&key, &names).or_else(|| {
                            Some(format!(
                                "the keys allowed here are {}",
                                names
                                    .iter()
                                    .map(|n| format!("{n:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        });
                        let message = if path.is_empty() {
                            format!("unknown top-level key {key:?}")
                        } else {
                            format!("unknown key {key:?} in {}", section(path))
                        };
                        self.bad_key(&p, message, hint);
                        table.remove(&key);
                        continue;
                    }
                    Some(s @ Json::Object(_)) => s.clone(),
                    _ => Json::Bool(true),
                },
            };
            let mut v = table.remove(&key).expect("key listed");
            if self.check(&mut v, &sub, root, &p) {
                table.insert(key, v);
            } else if schema
                .get("required")
                .and_then(Json::as_array)
                .is_some_and(|r| r.iter().any(|k| k == key.as_str()))
            {
                ok = false;
            }
        }
        for required in schema
            .get("required")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
        {
            let p = join(path, required);
            if !table.contains_key(required) && !self.broken.contains(&p) {
                self.bad(
                    path,
                    format!("missing key {required:?} in {}", section(path)),
                    None,
                );
                ok = false;
            }
        }
        ok
    }
}

pub(super) fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Follow a `$ref` into `$defs`.
pub(super) fn deref<'s>(schema: &'s Json, root: &'s Json) -> &'s Json {
    match schema.get("$ref").and_then(Json::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs")?.get(name))
            .unwrap_or(schema),
        None => schema,
    }
}

pub(super) fn did_you_mean(word: &str, candidates: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    let (best, distance) = candidates
        .iter()
        .map(|c| (*c, edit_distance(&lower, &c.to_ascii_lowercase())))
        .min_by_key(|(_, d)| *d)?;
    let limit = (word.chars().count() / 3).max(2);
    (distance <= limit).then(|| format!("did you mean {best:?}?"))
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}
