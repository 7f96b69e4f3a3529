//! The validation context: where every key and value of the file is (for file:line:column),
//! the problems found so far, the paths that already have one, `${VAR}` expansion, and the
//! dotted-path helpers.

use super::*;

// ---------------------------------------------------------------------------------------------
// The validation context: positions, problems, and the paths that already have one.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub(super) struct Pos {
    pub(super) key: usize,
    pub(super) value: usize,
}

pub(super) struct Cx<'t> {
    pub(super) text: &'t str,
    pub(super) file: String,
    /// Byte offset of the start of each line.
    pub(super) line_starts: Vec<usize>,
    pub(super) positions: HashMap<String, Pos>,
    pub(super) problems: Vec<(usize, ConfigProblem)>,
    /// Paths with a problem already: no follow-on problems for them.
    pub(super) broken: HashSet<String>,
    /// Values read from the environment: never echoed in a problem (a secret put in the
    /// wrong key must not end up in a log).
    pub(super) from_env: Vec<String>,
}

pub(super) enum At {
    Key,
    Value,
}

impl<'t> Cx<'t> {
    pub(super) fn new(text: &'t str, file: &str) -> Cx<'t> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Cx {
            text,
            file: file.to_string(),
            line_starts,
            positions: HashMap::new(),
            problems: Vec::new(),
            broken: HashSet::new(),
            from_env: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    /// The offset of `path` (its key or its value); a path that is not in the file (a missing
    /// key) falls back to its nearest ancestor that is.
    pub(super) fn offset(&self, path: &str, at: At) -> usize {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return match at {
                    At::Key => pos.key,
                    At::Value => pos.value,
                };
            }
            match parent(p) {
                Some(up) => p = up,
                None => return 0,
            }
        }
    }

    pub(super) fn push(&mut self, path: &str, at: At, message: String, hint: Option<String>) {
        if self.broken.contains(path) {
            return;
        }
        self.broken.insert(path.to_string());
        let offset = self.offset(path, at);
        let (line, column) = self.line_col(offset);
        self.problems.push((
            self.problems.len(),
            ConfigProblem {
                file: self.file.clone(),
                line,
                column,
                key: path.to_string(),
                message,
                hint,
            },
        ));
    }

    /// A problem at a line of another file (a recipients file): `key` is recorded as given.
    pub(super) fn bad_in_file(
        &mut self,
        file: &str,
        line: usize,
        key: &str,
        message: String,
        hint: Option<String>,
    ) {
        if !self.broken.insert(key.to_string()) {
            return;
        }
        self.problems.push((
            self.problems.len(),
            ConfigProblem {
                file: file.to_string(),
                line,
                column: 1,
                key: key.to_string(),
                message,
                hint,
            },
        ));
    }

    /// A problem with the value at `path`.
    pub(super) fn bad(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.push(path, At::Value, message.into(), hint);
    }

    /// A problem with the key at `path` (unknown, misplaced).
    pub(super) fn bad_key(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.push(path, At::Key, message.into(), hint);
    }

    pub(super) fn finish(self, policy: Option<Policy>) -> Result<Policy, ConfigError> {
        let mut problems = self.problems;
        // Mask environment-provided text (long enough to be a credential) in every message.
        let mut from_env: Vec<&String> = self.from_env.iter().filter(|v| v.len() >= 6).collect();
        from_env.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for (_, p) in &mut problems {
            for value in &from_env {
                if p.message.contains(value.as_str()) {
                    p.message = p.message.replace(value.as_str(), "***");
                }
                if let Some(hint) = &mut p.hint
                    && hint.contains(value.as_str())
                {
                    *hint = hint.replace(value.as_str(), "***");
                }
            }
        }
        match policy {
            Some(policy) if problems.is_empty() => Ok(policy),
            _ => {
                problems.sort_by_key(|(seq, p)| (p.line, p.column, *seq));
                let mut problems: Vec<ConfigProblem> =
                    problems.into_iter().map(|(_, p)| p).collect();
                if problems.is_empty() {
                    problems.push(ConfigProblem {
                        file: self.file,
                        line: 1,
                        column: 1,
                        key: String::new(),
                        message: "the policy could not be read".into(),
                        hint: None,
                    });
                }
                Err(ConfigError { problems })
            }
        }
    }

    // -- step 2: spanned tree -> plain tree, with ${VAR} expansion and a position index -------

    pub(super) fn convert(
        &mut self,
        v: &Spanned<DeValue<'_>>,
        path: String,
        key_offset: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> toml::Value {
        self.positions.insert(
            path.clone(),
            Pos {
                key: key_offset,
                value: v.span().start,
            },
        );
        match v.get_ref() {
            DeValue::String(s) => toml::Value::String(self.expand(s, &path, env)),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => {
                    self.bad(&path, format!("{} is out of range", field(&path)), None);
                    toml::Value::Integer(0)
                }
            },
            DeValue::Float(f) => toml::Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
            DeValue::Boolean(b) => toml::Value::Boolean(*b),
            DeValue::Datetime(d) => toml::Value::Datetime(*d),
            DeValue::Array(items) => toml::Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let p = format!("{path}[{i}]");
                        self.convert(item, p, item.span().start, env)
                    })
                    .collect(),
            ),
            DeValue::Table(table) => {
                let mut out = toml::Table::new();
                for (k, item) in table.iter() {
                    let name = k.get_ref().to_string();
                    let p = join(&path, &name);
                    let value = self.convert(item, p, k.span().start, env);
                    out.insert(name, value);
                }
                toml::Value::Table(out)
            }
        }
    }

    /// Expand `${VAR}` in a string value; `$${` is a literal `${`. Problems name the variable.
    pub(super) fn expand(
        &mut self,
        s: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> String {
        if !s.contains('$') {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        let mut missing = Vec::new();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(tail) = after.strip_prefix("${") {
                let Some(end) = tail.find('}') else {
                    self.bad(
                        path,
                        format!("unterminated \"${{\" in {}", field(path)),
                        Some("write ${NAME}, or $${ for a literal \"${\"".into()),
                    );
                    return s.to_string();
                };
                let name = &tail[..end];
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.bad(
                        path,
                        format!(
                            "invalid environment variable name {name:?} in {}",
                            field(path)
                        ),
                        Some("names are letters, digits and _, e.g. ${CF_API_TOKEN}".into()),
                    );
                    return s.to_string();
                }
                match env(name) {
                    Some(value) => {
                        out.push_str(&value);
                        self.from_env.push(value);
                    }
                    None => missing.push(name.to_string()),
                }
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        if missing.is_empty() {
            return out;
        }
        let names: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
        let (noun, verb) = if missing.len() == 1 {
            ("variable", "is")
        } else {
            ("variables", "are")
        };
        self.bad(
            path,
            format!(
                "environment {noun} {} {verb} not set (used by {})",
                names.join(", "),
                field(path)
            ),
            Some(format!(
                "set {} in the environment (e.g. the service's EnvironmentFile=)",
                missing.join(", ")
            )),
        );
        s.to_string()
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a.b[1].c` -> `a.b[1]` -> `a.b` -> `a` -> `` -> None.
pub(super) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

/// How a table path reads in a message: `[daemon]`, `[[database]] #2`, `the top level`.
pub(super) fn section(path: &str) -> String {
    if path.is_empty() {
        return "the top level".into();
    }
    if let Some(open) = path.find('[') {
        let (name, rest) = path.split_at(open);
        let close = rest.find(']').unwrap_or(rest.len());
        let index: usize = rest[1..close].parse().unwrap_or(0);
        let tail = rest.get(close + 1..).unwrap_or("");
        let tail = tail.trim_start_matches('.');
        return if tail.is_empty() {
            format!("[[{name}]] #{}", index + 1)
        } else {
            format!("[[{name}]] #{} ({tail})", index + 1)
        };
    }
    format!("[{path}]")
}

/// How a key path reads in a message: `"tick" in [daemon]`.
pub(super) fn field(path: &str) -> String {
    let Some(up) = parent(path) else {
        return "the policy".into();
    };
    let last = &path[up.len()..];
    let last = last.trim_start_matches('.');
    if last.starts_with('[') {
        // An array item: name the array.
        let array = up;
        return format!("an item of {}", field(array));
    }
    format!("{last:?} in {}", section(up))
}
