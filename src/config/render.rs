//! Policies for people: `patina check`'s effective policy with next fire times, and the policy
//! reference (docs/policy.md) generated from the JSON Schema.

use super::*;

/// The effective policy as `patina check` prints it: databases with priority, schedule and
/// the next three fire times after `now` in the configured timezone. Secrets print as `***`;
/// age recipients print as their fingerprints, identities only as the file's path.
/// The lines under a `storage:` or `replica:` line of [`describe`]; keys masked.
fn storage_lines(out: &mut String, s: &Storage, compression: bool) {
    if !s.prefix.is_empty() {
        let _ = writeln!(out, "  prefix:     {}", s.prefix);
    }
    if compression {
        let _ = writeln!(out, "  compression: {}", s.compression.as_str());
    }
    if let Some(endpoint) = &s.endpoint {
        let _ = writeln!(out, "  endpoint:   {endpoint}");
    }
    if let Some(region) = &s.region {
        let _ = writeln!(out, "  region:     {region}");
    }
    if s.access_key_id.is_some() {
        let _ = writeln!(out, "  keys:       *** / ***");
    }
}

pub fn describe(policy: &Policy, now: chrono::DateTime<chrono::Utc>) -> String {
    let when = |s: &Schedule| {
        let times: Vec<String> = s
            .upcoming(now, 3)
            .iter()
            .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
            .collect();
        if times.is_empty() {
            "never".to_string()
        } else {
            times.join(", ")
        }
    };
    let mut out = String::new();
    let d = &policy.daemon;
    let s = &policy.storage;
    let r = &policy.retention;
    let _ = writeln!(out, "config file:  {}", policy.source.display());
    let _ = writeln!(out, "storage:      {}", s.location);
    storage_lines(&mut out, s, true);
    for replica in &policy.replicas {
        let s = &replica.storage;
        let _ = writeln!(out, "replica:      {} {}", replica.name, s.location);
        // A replica's compression is the primary's: copies are byte for byte.
        storage_lines(&mut out, s, false);
        let tier = |t: Option<Option<Span>>, primary: Option<Span>| match t {
            None => format!(
                "{} (as [retention])",
                primary.map_or("off".into(), |s| s.to_string())
            ),
            Some(t) => t.map_or("off".into(), |s| s.to_string()),
        };
        let _ = writeln!(
            out,
            "  retention:  daily {}, weekly {}, monthly {} (from its own listing)",
            tier(replica.daily.map(Some), Some(policy.retention.daily)),
            tier(replica.weekly, policy.retention.weekly),
            tier(replica.monthly, policy.retention.monthly)
        );
    }
    if let Some(c) = &policy.cluster {
        let _ = writeln!(
            out,
            "cluster:      node {}, lease_ttl {}s (databases shared with the other nodes on this storage)",
            c.node,
            c.lease_ttl.as_secs()
        );
    }
    let _ = writeln!(out, "state dir:    {}", d.state_dir.display());
    let _ = writeln!(out, "listen:       {}", d.listen);
    if let Some(tls) = &d.tls {
        let _ = writeln!(
            out,
            "  tls:        cert {}, key {}",
            tls.cert.display(),
            tls.key.display()
        );
    }
    let _ = writeln!(
        out,
        "  reads:      {}",
        if d.public_read {
            "open (public_read = true)"
        } else {
            "need a token with scope read (public_read = false)"
        }
    );
    if !d.trusted_proxies.is_empty() {
        let proxies: Vec<String> = d.trusted_proxies.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(out, "  trusted proxies: {}", proxies.join(", "));
    }
    let _ = writeln!(
        out,
        "  audit kept: {}",
        Span::Seconds(d.audit_retention.as_secs())
    );
    if d.tokens.is_empty() {
        let _ = writeln!(
            out,
            "api tokens:   none (trigger and download endpoints disabled)"
        );
    } else {
        let _ = writeln!(out, "api tokens:   {}", d.tokens.len());
        for t in &d.tokens {
            let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
            let _ = writeln!(
                out,
                "  {} (secret {}): {}",
                t.name,
                t.secret,
                scopes.join(", ")
            );
        }
    }
    let _ = writeln!(out, "timezone:     {}", d.timezone);
    let _ = writeln!(out, "tick:         {}", Span::Seconds(d.tick.as_secs()));
    let _ = writeln!(
        out,
        "full listing: every {}",
        Span::Seconds(d.full_listing.as_secs())
    );
    let _ = writeln!(out, "concurrency:  {}", d.concurrency);
    let _ = writeln!(
        out,
        "history:      {}{}",
        Span::Seconds(policy.history_retention().as_secs()),
        if d.history_retention.is_some() {
            ""
        } else {
            " (longest retention tier + 4w)"
        }
    );
    let off = |s: Option<Span>| s.map_or("off".to_string(), |s| s.to_string());
    let _ = writeln!(
        out,
        "retention:    daily {}, weekly {}, monthly {}",
        r.daily,
        off(r.weekly),
        off(r.monthly)
    );
    let _ = writeln!(
        out,
        "  archive:    {}  next: {}",
        r.archive.expression(),
        when(&r.archive)
    );
    match &policy.drills {
        Some(d) => {
            let _ = writeln!(
                out,
                "drills:       {}  next: {}  (newest + {} sampled per database)",
                d.schedule.expression(),
                when(&d.schedule),
                d.sample
            );
        }
        None => {
            let _ = writeln!(
                out,
                "drills:       off (set [verify] schedule to drill restores)"
            );
        }
    }
    if let Some(cf) = &policy.cloudflare {
        let _ = writeln!(
            out,
            "cloudflare:   account {}, token {}, api {}",
            cf.account_id, cf.api_token, cf.api_url
        );
    }
    match &policy.encryption {
        None => {
            let _ = writeln!(out, "encryption:   none (dumps are stored unencrypted)");
        }
        Some(e) => {
            let fingerprints = e.recipients.fingerprints();
            let _ = writeln!(
                out,
                "encryption:   age, {} recipient{}{}",
                fingerprints.len(),
                if fingerprints.len() == 1 { "" } else { "s" },
                e.recipients_file
                    .as_ref()
                    .map(|f| format!(" (from {})", f.display()))
                    .unwrap_or_default()
            );
            for f in &fingerprints {
                let _ = writeln!(out, "  recipient:  {f}");
            }
            let _ = writeln!(
                out,
                "  identity:   {}",
                match &e.identity_file {
                    Some(path) => format!(
                        "{} (read only to restore, verify and download)",
                        path.display()
                    ),
                    None => "none here: this host backs up but cannot read backups (restore --identity FILE)".into(),
                }
            );
        }
    }
    let _ = writeln!(out, "\ndatabases ({}):", policy.databases.len());
    for db in &policy.databases {
        let _ = writeln!(out, "  {}", db.name);
        if let Some(description) = &db.description {
            let _ = writeln!(out, "    about:      {description}");
        }
        let source = match &db.source {
            SourceSpec::Sqlite { path } => path.display().to_string(),
            SourceSpec::D1 { id, mode } => format!(
                "{id} (mode {})",
                match mode {
                    D1Mode::Export => "export",
                    D1Mode::Query => "query",
                }
            ),
        };
        let _ = writeln!(out, "    kind:       {}", db.source.kind());
        let _ = writeln!(out, "    source:     {source}");
        let _ = writeln!(out, "    priority:   {}", db.priority);
        let _ = writeln!(
            out,
            "    schedule:   {}{}",
            db.schedule.expression(),
            if db.schedule_overridden {
                " (override)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "    enabled:    {}",
            if db.enabled { "yes" } else { "no" }
        );
        if !db.exclude_tables.is_empty() {
            let _ = writeln!(out, "    excluded:   {}", db.exclude_tables.join(", "));
        }
        if db.enabled {
            let _ = writeln!(out, "    next:       {}", when(&db.schedule));
        }
    }
    let a = &policy.alerts;
    let _ = writeln!(
        out,
        "\nalerts:       max duration {}, size deviation {}, stale after {}, renotify {}",
        Span::Seconds(a.max_duration.as_secs()),
        a.size_deviation,
        a.stale_after,
        a.renotify
            .map(|d| Span::Seconds(d.as_secs()).to_string())
            .unwrap_or_else(|| "off".into())
    );
    if let Some(summary) = &a.daily_summary {
        let _ = writeln!(
            out,
            "  daily summary: {}  next: {}",
            summary.expression(),
            when(summary)
        );
    }
    let _ = writeln!(out, "alert sinks ({}):", policy.sinks.len());
    for sink in &policy.sinks {
        let events: Vec<&str> = sink.on.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(
            out,
            "  {} ({}, url ***): {}",
            sink.name,
            sink.kind.as_str(),
            events.join(", ")
        );
    }
    out
}

/// The policy reference (`docs/policy.md`), generated from the same schema editors use, so the
/// documentation cannot drift from the parser: every section and key with its type, default and
/// description.
pub fn reference_markdown() -> String {
    use std::fmt::Write as _;
    let schema = json_schema();
    let defs = schema.get("$defs").cloned().unwrap_or(Json::Null);
    let resolve = |v: &Json| -> Json {
        match v.get("$ref").and_then(Json::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/$defs/");
                let mut target = defs.get(name).cloned().unwrap_or(Json::Null);
                // Keep the referring property's own description and default.
                if let (Json::Object(t), Json::Object(src)) = (&mut target, v) {
                    for key in ["description", "default"] {
                        if let Some(x) = src.get(key) {
                            t.insert(key.into(), x.clone());
                        }
                    }
                }
                target
            }
            None => v.clone(),
        }
    };
    let kind = |v: &Json| -> String {
        let v = resolve(v);
        if let Some(values) = v.get("enum").and_then(Json::as_array) {
            return values
                .iter()
                .map(|x| format!("`{}`", x.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        if let Some(alts) = v.get("oneOf").and_then(Json::as_array) {
            let consts: Vec<String> = alts
                .iter()
                .filter_map(|a| a.get("const").and_then(Json::as_str))
                .map(|c| format!("`{c}`"))
                .collect();
            if !consts.is_empty() {
                return consts.join(" \\| ");
            }
        }
        match v.get("type") {
            Some(Json::String(t)) if t == "array" => {
                let item = v.get("items").map(&resolve);
                let inner = item
                    .as_ref()
                    .and_then(|i| i.get("type"))
                    .and_then(Json::as_str)
                    .unwrap_or("value");
                format!("array of {inner}")
            }
            Some(Json::String(t)) if t == "object" => "table".into(),
            Some(Json::String(t)) => t.clone(),
            Some(Json::Array(ts)) => ts
                .iter()
                .filter_map(Json::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
            _ => "value".into(),
        }
    };
    let default = |v: &Json| -> String {
        match v.get("default") {
            None => "—".into(),
            Some(Json::String(s)) => format!("`\"{s}\"`"),
            Some(other) => format!("`{other}`"),
        }
    };
    let cell = |s: &str| s.replace('\n', " ").replace('|', "\\|");
    let mut out = String::new();
    out.push_str(
        "# Policy reference\n\n\
         Every key of `patina.toml`, generated from the schema (`schemas/patina.schema.json`) by \
         `config::reference_markdown`; a test fails when this file drifts. Strings may read the \
         environment with `${VAR}` (`$${` is a literal `${`); relative paths are resolved against \
         the policy file's directory. Durations: `30s 15m 2h 7d 12w`, and `12mo` (calendar \
         months) for retention. Schedules: 5-field cron (`minute hour day-of-month month \
         day-of-week`, Sunday is 0 or 7 or `SUN`) or `@hourly @daily @weekly @monthly @yearly`, \
         read in `[daemon] timezone`; a job in a DST gap runs once, at the first instant after \
         it. Unknown keys are errors.\n",
    );
    let props = schema
        .get("properties")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    let order = [
        ("daemon", "[daemon]"),
        ("storage", "[storage]"),
        ("replica", "[[replica]]"),
        ("cluster", "[cluster]"),
        ("priorities", "[priorities.<level>]"),
        ("retention", "[retention]"),
        ("cloudflare", "[cloudflare]"),
        ("encryption", "[encryption]"),
        ("database", "[[database]]"),
        ("alerts", "[alerts]"),
        ("alert", "[[alert]]"),
        ("token", "[[token]]"),
        ("verify", "[verify]"),
    ];
    for (key, title) in order {
        let Some(section) = props.get(key) else {
            continue;
        };
        let mut section = resolve(section);
        if let Some(items) = section.get("items") {
            let description = section.get("description").cloned();
            section = resolve(items);
            if let (Some(d), Json::Object(m)) = (description, &mut section) {
                m.insert("description".into(), d);
            }
        }
        if key == "priorities" {
            // Each level holds the same table; document the level names and the table once.
            let levels: Vec<String> = section
                .get("properties")
                .and_then(Json::as_object)
                .map(|m| m.keys().map(|k| format!("`{k}`")).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\n## `{title}`\n\n{} Levels: {}.\n",
                cell(
                    section
                        .get("description")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                ),
                levels.join(", ")
            );
            section = defs.get("Priority").cloned().unwrap_or(Json::Null);
        } else {
            let _ = writeln!(
                out,
                "\n## `{title}`\n\n{}\n",
                cell(
                    section
                        .get("description")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                )
            );
        }
        let required: Vec<&str> = section
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
        if let Some(fields) = section.get("properties").and_then(Json::as_object) {
            for (name, field) in fields {
                let d = if required.contains(&name.as_str()) {
                    "required".to_string()
                } else {
                    default(field)
                };
                let _ = writeln!(
                    out,
                    "| `{name}` | {} | {d} | {} |",
                    kind(field),
                    cell(
                        field
                            .get("description")
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                    )
                );
            }
        }
    }
    out
}
