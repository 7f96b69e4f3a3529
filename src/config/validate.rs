//! Steps 4 and 5 of loading a policy: the checked tree is deserialized into the raw types (each
//! `[[database]]` and `[[alert]]` on its own, so one broken entry does not hide the others) and
//! their meaning validated into a [`Policy`]: addresses, durations, cron, timezone, URLs, names,
//! cross references, credentials.

use super::*;
use crate::policy::{PRIMARY, Replica};

impl Cx<'_> {
    // -- steps 4 and 5: deserialize the raw types and validate their meaning -----------------

    pub(super) fn build(
        &mut self,
        tree: toml::Value,
        file: &str,
        base_dir: &Path,
    ) -> Option<Policy> {
        let toml::Value::Table(mut root) = tree else {
            return None;
        };
        let take_items = |root: &mut toml::Table, key: &str| match root.remove(key) {
            Some(toml::Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let db_items = take_items(&mut root, "database");
        let alert_items = take_items(&mut root, "alert");
        let token_items = take_items(&mut root, "token");
        let replica_items = take_items(&mut root, "replica");
        let raw: RawConfig = match toml::Value::Table(root).try_into() {
            Ok(raw) => raw,
            Err(e) => {
                self.bad("", format!("cannot read the policy: {}", e.message()), None);
                return None;
            }
        };
        let databases = self.items::<RawDatabase>(db_items, "database");
        let alert_sinks = self.items::<RawAlert>(alert_items, "alert");
        let tokens = self.items::<RawToken>(token_items, "token");
        let replicas = self.items::<RawReplica>(replica_items, "replica");

        let daemon = self.daemon(&raw.daemon, tokens, base_dir);
        let tz = daemon.as_ref().map_or(chrono_tz::Tz::UTC, |d| d.timezone);
        let storage = self.storage(&raw.storage, base_dir);
        let priorities = self.priorities(&raw.priorities, tz);
        let retention = self.retention(&raw.retention, tz);
        let cloudflare = raw.cloudflare.as_ref().and_then(|cf| self.cloudflare(cf));
        let databases = self.databases(
            databases,
            &priorities,
            raw.cloudflare.is_some() || self.broken.contains("cloudflare"),
            tz,
            base_dir,
        );
        let alerts = self.alerts(&raw.alerts, tz);
        let sinks = self.sinks(alert_sinks);
        let drills = self.drills(&raw.verify, tz);
        let replicas = self.replicas(replicas, storage.as_ref(), base_dir);
        let cluster = raw
            .cluster
            .as_ref()
            .map(|c| self.cluster(c, storage.as_ref()));
        let encryption = match &raw.encryption {
            Some(e) => Some(self.encryption(e, base_dir)?),
            None => None,
        };
        // A drill restores sealed backups, so it needs the identity that opens them here.
        if let (Some(Some(_)), Some(e)) = (&drills, &encryption)
            && e.identity_file.is_none()
        {
            self.bad(
                "verify.schedule",
                "[verify] schedules restore drills, but [encryption] has no identity_file: \
                 this host could not open the sealed backups it drills",
                Some(
                    "set identity_file in [encryption] on this host, or run drills where the \
                     identity is (remove [verify] here)"
                        .into(),
                ),
            );
            return None;
        }

        Some(Policy {
            source: PathBuf::from(file),
            daemon: daemon?,
            storage: storage?,
            priorities,
            retention: retention?,
            cloudflare,
            databases: databases?,
            alerts: alerts?,
            sinks: sinks?,
            drills: drills?,
            encryption,
            replicas: replicas?,
            cluster: match cluster {
                None => None,
                Some(c) => Some(c?),
            },
        })
    }

    /// `[cluster]`: a ttl of at least 3 s (a renewal every third of it), a node name that is
    /// safe in a key, and storage that can do conditional writes.
    pub(super) fn cluster(
        &mut self,
        raw: &RawCluster,
        storage: Option<&Storage>,
    ) -> Option<Cluster> {
        let ttl = self.duration(
            "cluster.lease_ttl",
            raw.lease_ttl.as_deref().unwrap_or("30s"),
        );
        let ttl = match ttl {
            Some(t) if t < Duration::from_secs(3) => {
                self.bad(
                    "cluster.lease_ttl",
                    format!(
                        "\"lease_ttl\" in [cluster] is {}s; at least 3s",
                        t.as_secs()
                    ),
                    Some("nodes renew every third of it; 30s is the default".into()),
                );
                None
            }
            t => t,
        };
        let node = match raw.node.clone() {
            Some(n) => Some(n),
            None => host_name(),
        };
        let node = match node {
            Some(n) if crate::lease::valid_node_name(&n) => Some(n),
            Some(n) => {
                self.bad(
                    "cluster.node",
                    format!("invalid node name {n:?}"),
                    Some(
                        "1 to 63 letters, digits, '.', '_' or '-'; set node = \"…\" in [cluster]"
                            .into(),
                    ),
                );
                None
            }
            None => {
                self.bad(
                    "cluster.node",
                    "cannot read this host's name for the node name",
                    Some("set node = \"…\" in [cluster]".into()),
                );
                None
            }
        };
        let conditional = match storage.map(|s| &s.location) {
            Some(StorageLocation::S3 { .. }) | None => true,
            Some(other) => {
                let kind = match other {
                    StorageLocation::File(_) => "a file:// folder",
                    _ => "memory://",
                };
                self.bad(
                    "cluster",
                    format!(
                        "[cluster] needs storage with conditional writes (If-Match, If-None-Match), \
                         and [storage] is {kind}, which has none: two daemons could both take \
                         the same lease"
                    ),
                    Some(
                        "point [storage] at an s3:// bucket (Cloudflare R2, AWS S3, MinIO) \
                         shared by every node, or remove [cluster] to run one daemon"
                            .into(),
                    ),
                );
                false
            }
        };
        Some(Cluster {
            lease_ttl: ttl?,
            node: node?,
        })
        .filter(|_| conditional)
    }

    /// `[[replica]]`: each a storage location like `[storage]` (the same keys, validated by
    /// the same code), a unique name, and optional retention overrides.
    pub(super) fn replicas(
        &mut self,
        raw: Vec<(usize, RawReplica)>,
        primary: Option<&Storage>,
        base_dir: &Path,
    ) -> Option<Vec<Replica>> {
        let mut out = Vec::new();
        let mut complete = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, r) in raw {
            let at = format!("replica[{i}]");
            let mut ok = true;
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                self.bad(
                    &format!("{at}.name"),
                    format!("invalid replica name {:?}", r.name),
                    Some("names are lowercase letters, digits and '-'".into()),
                );
                ok = false;
            } else if r.name == PRIMARY {
                self.bad(
                    &format!("{at}.name"),
                    "the replica name \"primary\" is reserved for [storage]",
                    Some("choose another name, e.g. \"offsite\"".into()),
                );
                ok = false;
            } else if !self.unique_name(&mut seen, "replica", i, &r.name) {
                ok = false;
            }
            if r.url.starts_with("memory://") {
                self.bad(
                    &format!("{at}.url"),
                    format!("{} cannot be \"memory://\"", section(&at)),
                    Some("a replica must outlive the process: use \"file://PATH\" or \"s3://BUCKET\"".into()),
                );
                ok = false;
            }
            let raw_storage = RawStorage {
                url: Some(r.url.clone()),
                endpoint: r.endpoint.clone(),
                region: r.region.clone(),
                access_key_id: r.access_key_id.clone(),
                secret_access_key: r.secret_access_key.clone(),
                prefix: r.prefix.clone(),
                compression: None,
            };
            let storage = if ok {
                self.storage_at(&at, &raw_storage, base_dir)
            } else {
                None
            };
            if let (Some(s), Some(p)) = (&storage, primary)
                && s.location == p.location
                && s.prefix == p.prefix
                && s.endpoint == p.endpoint
            {
                self.bad(
                    &format!("{at}.url"),
                    format!(
                        "{} is the same place as [storage] ({}{})",
                        section(&at),
                        s.location,
                        if s.prefix.is_empty() {
                            ""
                        } else {
                            " with the same prefix"
                        }
                    ),
                    Some("a replica must be another bucket, folder or prefix".into()),
                );
                ok = false;
            }
            let daily = match r.daily.as_deref() {
                None => Some(None),
                Some(text) => self.span(&format!("{at}.daily"), text).map(Some),
            };
            let tier = |cx: &mut Self, key: &str, text: Option<&str>| match text {
                None => Some(None),
                Some("off") => Some(Some(None)),
                Some(text) => cx.span(&format!("{at}.{key}"), text).map(|s| Some(Some(s))),
            };
            let weekly = tier(self, "weekly", r.weekly.as_deref());
            let monthly = tier(self, "monthly", r.monthly.as_deref());
            match (ok, storage, daily, weekly, monthly) {
                (true, Some(mut storage), Some(daily), Some(weekly), Some(monthly)) => {
                    if let Some(p) = primary {
                        // Copies are byte for byte: the primary's compression is theirs.
                        storage.compression = p.compression;
                    }
                    out.push(Replica {
                        name: r.name,
                        storage,
                        daily,
                        weekly,
                        monthly,
                    });
                }
                _ => complete = false,
            }
        }
        complete.then_some(out)
    }

    /// `[verify]`: drills when a schedule is given.
    pub(super) fn drills(&mut self, raw: &RawVerify, tz: chrono_tz::Tz) -> Option<Option<Drills>> {
        let sample = raw.sample.unwrap_or(2);
        let sample_ok = sample <= 100;
        if !sample_ok {
            self.bad(
                "verify.sample",
                format!("\"sample\" in [verify] is {sample}; at most 100"),
                Some("each drilled restore point is a full restore; sample a few".into()),
            );
        }
        // The schedule is checked too, so one run of `patina check` names both problems.
        let schedule = match raw.schedule.as_deref() {
            None => None,
            Some(expr) => Some(self.schedule("verify.schedule", expr, tz)?),
        };
        sample_ok.then(|| schedule.map(|schedule| Drills { schedule, sample }))
    }

    /// Deserialize each entry of an array of tables on its own, keeping its index.
    pub(super) fn items<T: for<'de> Deserialize<'de>>(
        &mut self,
        items: Vec<toml::Value>,
        key: &str,
    ) -> Vec<(usize, T)> {
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if !item.is_table() {
                continue; // a tombstone left by the schema check
            }
            let path = format!("{key}[{i}]");
            match item.try_into::<T>() {
                Ok(v) => out.push((i, v)),
                Err(e) => self.bad(
                    &path,
                    format!("cannot read {}: {}", section(&path), e.message()),
                    None,
                ),
            }
        }
        out
    }

    pub(super) fn daemon(
        &mut self,
        raw: &RawDaemon,
        tokens: Vec<(usize, RawToken)>,
        base_dir: &Path,
    ) -> Option<Daemon> {
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:9477");
        let listen = match listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    "daemon.listen",
                    format!("\"listen\" in [daemon] is not an IP:PORT address: {listen:?}"),
                    Some("use an IP address and a port, e.g. \"127.0.0.1:9477\"".into()),
                );
                None
            }
        };
        let state_dir = raw.state_dir.as_deref().unwrap_or(".patina");
        if state_dir.is_empty() {
            self.bad(
                "daemon.state_dir",
                "\"state_dir\" in [daemon] is empty",
                Some("the default is \".patina\"".into()),
            );
        }
        let tick = self.duration("daemon.tick", raw.tick.as_deref().unwrap_or("60s"));
        let full_listing = self.duration(
            "daemon.full_listing",
            raw.full_listing.as_deref().unwrap_or("1h"),
        );
        let concurrency = raw.concurrency.unwrap_or(3) as usize;
        let timezone = self.timezone(raw.timezone.as_deref().unwrap_or("UTC"));
        let history_retention = match raw.history_retention.as_deref() {
            Some(text) => Some(self.duration("daemon.history_retention", text)?),
            None => None,
        };
        let public_read = raw.public_read.unwrap_or(true);
        let tokens = self.tokens(raw.api_token.as_deref(), tokens);
        if let Some(tokens) = &tokens
            && !public_read
            && !tokens.iter().any(|t| t.allows(Scope::Read))
        {
            self.bad(
                "daemon.public_read",
                "public_read = false in [daemon], but no token has scope \"read\": nobody could \
                 read /status, /ui or /metrics",
                Some(
                    "add a [[token]] with scopes = [\"read\"] (or set api_token), or set \
                     public_read = true"
                        .into(),
                ),
            );
        }
        let trusted_proxies = self.trusted_proxies(raw.trusted_proxies.as_deref().unwrap_or(&[]));
        let audit_retention = self.duration(
            "daemon.audit_retention",
            raw.audit_retention.as_deref().unwrap_or("90d"),
        );
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
                Some(Some(TlsFiles {
                    cert: resolve(base_dir, cert),
                    key: resolve(base_dir, key),
                }))
            }
            (None, None) => Some(None),
            (cert, key) => {
                let (path, other) = match (cert.as_deref(), key.as_deref()) {
                    (Some(""), _) => ("daemon.tls_cert", "a certificate file"),
                    (_, Some("")) => ("daemon.tls_key", "a key file"),
                    (Some(_), None) => ("daemon.tls_cert", "tls_key"),
                    _ => ("daemon.tls_key", "tls_cert"),
                };
                let message = if other.starts_with("tls_") {
                    format!("{} is set but {other:?} is not", field(path))
                } else {
                    format!("{} is empty", field(path))
                };
                self.bad(
                    path,
                    message,
                    Some(
                        "set both: tls_cert = \"/etc/patina/tls/fullchain.pem\" and tls_key = \
                         \"/etc/patina/tls/privkey.pem\", or neither for plain HTTP"
                            .into(),
                    ),
                );
                None
            }
        };
        Some(Daemon {
            listen: listen?,
            state_dir: resolve(base_dir, state_dir),
            tick: tick?,
            full_listing: full_listing?,
            concurrency,
            timezone: timezone?,
            history_retention,
            tokens: tokens?,
            public_read,
            trusted_proxies: trusted_proxies?,
            audit_retention: audit_retention?,
            tls: tls?,
        })
    }

    /// `[daemon] api_token` (the token `default` with every scope) and the `[[token]]` blocks:
    /// unique names, usable secrets (visible ASCII, at most [`MAX_TOKEN_LEN`] bytes), no secret
    /// used twice, at least one scope. Messages never show a secret.
    pub(super) fn tokens(
        &mut self,
        api_token: Option<&str>,
        raw: Vec<(usize, RawToken)>,
    ) -> Option<Vec<ApiToken>> {
        let mut out: Vec<ApiToken> = Vec::new();
        let mut complete = true;
        // Where each accepted secret was declared, to name it in a duplicate's message.
        let mut secret_at: Vec<String> = Vec::new();
        if let Some(secret) = api_token {
            let path = "daemon.api_token";
            if self.secret_ok(path, secret) {
                out.push(ApiToken {
                    name: DEFAULT_TOKEN.into(),
                    secret: Secret::new(secret),
                    scopes: Scope::ALL.to_vec(),
                });
                secret_at.push("api_token in [daemon]".into());
            } else {
                complete = false;
            }
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, t) in raw {
            let at = |key: &str| format!("token[{i}].{key}");
            let mut ok = true;
            if !valid_name(&t.name) || t.name.len() > 64 {
                self.bad(
                    &at("name"),
                    format!("invalid token name {:?}", t.name),
                    Some(
                        "names are 1-64 lowercase letters, digits, '_' and '-', starting with a \
                         letter or digit (they are recorded as who did it)"
                            .into(),
                    ),
                );
                ok = false;
            } else if api_token.is_some() && t.name == DEFAULT_TOKEN {
                self.bad(
                    &at("name"),
                    "token name \"default\" is taken by api_token in [daemon]",
                    Some("rename this token, or remove api_token".into()),
                );
                ok = false;
            } else if !self.unique_name(&mut seen, "token", i, &t.name) {
                ok = false;
            }
            if !self.secret_ok(&at("secret"), &t.secret) {
                ok = false;
            } else if let Some(first) = out
                .iter()
                .position(|o| o.secret.expose() == t.secret.as_str())
            {
                self.bad(
                    &at("secret"),
                    format!(
                        "token {:?} has the same secret as {}",
                        t.name, secret_at[first]
                    ),
                    Some(
                        "give every token its own secret (e.g. `openssl rand -hex 32`), so the \
                         audit log can tell who did what"
                            .into(),
                    ),
                );
                ok = false;
            }
            let scopes_broken = self.broken.iter().any(|b| b.starts_with(&at("scopes")));
            if t.scopes.is_empty() && !scopes_broken {
                self.bad(
                    &at("scopes"),
                    format!("token {:?} has no scopes", t.name),
                    Some("list some of \"trigger\", \"download\", \"read\"".into()),
                );
                ok = false;
            }
            let mut scopes: Vec<Scope> = t
                .scopes
                .iter()
                .map(|s| match s {
                    RawScope::Trigger => Scope::Trigger,
                    RawScope::Download => Scope::Download,
                    RawScope::Read => Scope::Read,
                })
                .collect();
            scopes.sort();
            scopes.dedup();
            if ok {
                secret_at.push(format!("token {:?}", t.name));
                out.push(ApiToken {
                    name: t.name,
                    secret: Secret::new(t.secret),
                    scopes,
                });
            } else {
                complete = false;
            }
        }
        complete.then_some(out)
    }

    /// A token secret an `Authorization: Bearer` header can carry.
    fn secret_ok(&mut self, path: &str, secret: &str) -> bool {
        if self.broken.contains(path) {
            return false; // e.g. an unset ${VAR}, already reported
        }
        let hint = Some(
            "use a random value such as the output of `openssl rand -hex 32`, from the \
             environment: secret = \"${PATINA_OPS_TOKEN}\""
                .to_string(),
        );
        let problem = if secret.is_empty() {
            Some("is empty".to_string())
        } else if secret.len() > MAX_TOKEN_LEN {
            Some(format!("is longer than {MAX_TOKEN_LEN} bytes"))
        } else if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            Some(
                "holds a space, a control or a non-ASCII character, which an Authorization \
                 header cannot carry"
                    .to_string(),
            )
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.bad(path, format!("{} {p}", field(path)), hint);
                false
            }
            None => true,
        }
    }

    /// `trusted_proxies`: IP addresses or CIDR ranges.
    pub(super) fn trusted_proxies(&mut self, raw: &[String]) -> Option<Vec<ipnet::IpNet>> {
        let mut out = Vec::new();
        let mut complete = true;
        for (i, text) in raw.iter().enumerate() {
            let parsed = text.parse::<ipnet::IpNet>().ok().or_else(|| {
                text.parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            match parsed {
                Some(net) => out.push(net.trunc()),
                None => {
                    self.bad(
                        &format!("daemon.trusted_proxies[{i}]"),
                        format!("{text:?} in trusted_proxies of [daemon] is not an IP address or CIDR range"),
                        Some("write e.g. \"127.0.0.1\", \"10.0.0.0/8\" or \"::1\"".into()),
                    );
                    complete = false;
                }
            }
        }
        complete.then_some(out)
    }

    pub(super) fn timezone(&mut self, name: &str) -> Option<chrono_tz::Tz> {
        match name.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                let lower = name.to_ascii_lowercase();
                let exact = chrono_tz::TZ_VARIANTS
                    .iter()
                    .find(|tz| tz.name().to_ascii_lowercase() == lower);
                let hint = match exact {
                    Some(tz) => Some(format!("did you mean {:?}?", tz.name())),
                    None => {
                        let names: Vec<&str> =
                            chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
                        did_you_mean(name, &names)
                    }
                }
                .or_else(|| Some("use an IANA name such as \"UTC\" or \"Europe/Berlin\"".into()));
                self.bad(
                    "daemon.timezone",
                    format!("unknown timezone {name:?} in [daemon]"),
                    hint,
                );
                None
            }
        }
    }

    pub(super) fn storage(&mut self, raw: &RawStorage, base_dir: &Path) -> Option<Storage> {
        self.storage_at("storage", raw, base_dir)
    }

    /// A storage location at `at` (`storage`, or `replica[i]` for a replica's same keys).
    pub(super) fn storage_at(
        &mut self,
        at: &str,
        raw: &RawStorage,
        base_dir: &Path,
    ) -> Option<Storage> {
        let table = section(at);
        let url_path = format!("{at}.url");
        let url = raw.url.as_deref().unwrap_or("file://.patina/backups");
        let scheme_hint = || Some("use \"file://PATH\", \"s3://BUCKET\" or \"memory://\"".into());
        let location = match url.split_once("://") {
            Some(("file", path)) if !path.is_empty() => {
                Some(StorageLocation::File(resolve(base_dir, path)))
            }
            Some(("file", _)) => {
                self.bad(
                    &url_path,
                    format!("\"url\" in {table} names no folder"),
                    Some("e.g. \"file://.patina/backups\"".into()),
                );
                None
            }
            Some(("s3", bucket)) => {
                if bucket.contains('/') {
                    let (b, p) = bucket.split_once('/').unwrap_or((bucket, ""));
                    self.bad(
                        &url_path,
                        format!("\"url\" in {table} must name only a bucket, not {bucket:?}"),
                        Some(format!("write url = \"s3://{b}\" and prefix = \"{p}\"")),
                    );
                    None
                } else if bucket.len() < 3
                    || bucket.len() > 63
                    || !bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
                {
                    self.bad(
                        &url_path,
                        format!("invalid bucket name {bucket:?} in {table} url"),
                        Some("bucket names are 3-63 lowercase letters, digits, '-' and '.'".into()),
                    );
                    None
                } else {
                    Some(StorageLocation::S3 {
                        bucket: bucket.to_string(),
                    })
                }
            }
            Some(("memory", "")) => Some(StorageLocation::Memory),
            Some(("memory", _)) => {
                self.bad(
                    &url_path,
                    "\"memory://\" storage takes no path",
                    Some("write url = \"memory://\"".into()),
                );
                None
            }
            Some((scheme, _)) => {
                self.bad(
                    &url_path,
                    format!("unsupported storage url scheme {scheme:?} in {table}"),
                    scheme_hint(),
                );
                None
            }
            None => {
                self.bad(
                    &url_path,
                    format!("\"url\" in {table} is not a URL"),
                    scheme_hint(),
                );
                None
            }
        };
        let is_s3 = matches!(location, Some(StorageLocation::S3 { .. }));
        if location.is_some() && !is_s3 {
            for (key, set) in [
                ("endpoint", raw.endpoint.is_some()),
                ("region", raw.region.is_some()),
                ("access_key_id", raw.access_key_id.is_some()),
                ("secret_access_key", raw.secret_access_key.is_some()),
            ] {
                if set {
                    self.bad_key(
                        &format!("{at}.{key}"),
                        format!("{key:?} in {table} is used only with s3:// storage"),
                        Some("remove it, or set url = \"s3://BUCKET\"".into()),
                    );
                }
            }
        }
        if is_s3 {
            match (&raw.access_key_id, &raw.secret_access_key) {
                (Some(_), None) => self.bad_key(
                    &format!("{at}.access_key_id"),
                    format!("\"access_key_id\" in {table} is set but \"secret_access_key\" is not"),
                    Some("set both keys, or neither to use the ambient AWS credentials".into()),
                ),
                (None, Some(_)) => self.bad_key(
                    &format!("{at}.secret_access_key"),
                    format!("\"secret_access_key\" in {table} is set but \"access_key_id\" is not"),
                    Some("set both keys, or neither to use the ambient AWS credentials".into()),
                ),
                _ => {}
            }
            if let Some(endpoint) = &raw.endpoint {
                self.http_url(&format!("{at}.endpoint"), endpoint, false);
            }
        }
        let prefix = raw.prefix.as_deref().unwrap_or("").trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let compression = match raw.compression.unwrap_or(RawCompression::Zstd) {
            RawCompression::Zstd => Compression::Zstd,
            RawCompression::Gzip => Compression::Gzip,
            RawCompression::None => Compression::None,
        };
        Some(Storage {
            location: location?,
            endpoint: raw.endpoint.clone(),
            region: raw.region.clone(),
            access_key_id: raw.access_key_id.clone().map(Secret::new),
            secret_access_key: raw.secret_access_key.clone().map(Secret::new),
            prefix,
            compression,
        })
    }

    /// Checks an http(s) URL; `secret` keeps the value out of the message.
    pub(super) fn http_url(&mut self, path: &str, value: &str, secret: bool) -> bool {
        let ok = url::Url::parse(value)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            let shown = if secret {
                String::new()
            } else {
                format!(": {value:?}")
            };
            self.bad(
                path,
                format!("{} is not an http(s) URL{shown}", field(path)),
                Some("write a full URL such as \"https://example.com/path\"".into()),
            );
        }
        ok
    }

    pub(super) fn schedule(
        &mut self,
        path: &str,
        expr: &str,
        tz: chrono_tz::Tz,
    ) -> Option<Schedule> {
        match Schedule::parse(expr, tz) {
            Ok(s) => Some(s),
            Err(e) => {
                self.bad(
                    path,
                    format!("{} in {}", e, field(path)),
                    Some(
                        "use 5 fields, \"minute hour day-of-month month day-of-week\" (e.g. \
                         \"0 3 * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly"
                            .into(),
                    ),
                );
                None
            }
        }
    }

    pub(super) fn priorities(
        &mut self,
        raw: &RawPriorities,
        tz: chrono_tz::Tz,
    ) -> BTreeMap<PriorityLevel, Priority> {
        let mut out = BTreeMap::new();
        for (level, p) in [
            (PriorityLevel::Critical, &raw.critical),
            (PriorityLevel::High, &raw.high),
            (PriorityLevel::Normal, &raw.normal),
            (PriorityLevel::Low, &raw.low),
        ] {
            if let Some(p) = p {
                let path = format!("priorities.{level}.schedule");
                if let Some(schedule) = self.schedule(&path, &p.schedule, tz) {
                    out.insert(level, Priority { level, schedule });
                }
            }
        }
        out
    }

    /// A retention span: `30s 15m 2h 7d 12w` or calendar months `12mo`.
    pub(super) fn span(&mut self, path: &str, text: &str) -> Option<Span> {
        match parse_span(text) {
            Some(span @ (Span::Seconds(1..) | Span::Months(1..))) => Some(span),
            Some(_) => {
                self.bad(
                    path,
                    format!("{} must be longer than zero", field(path)),
                    None,
                );
                None
            }
            None => {
                self.bad(
                    path,
                    format!("invalid duration {text:?} for {}", field(path)),
                    Some("write a number and a unit: 30s, 15m, 2h, 7d, 12w or 12mo".into()),
                );
                None
            }
        }
    }

    /// A plain duration: like a span, without months.
    pub(super) fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match parse_span(text) {
            Some(Span::Months(_)) => {
                self.bad(
                    path,
                    format!("{} cannot be in months: {text:?}", field(path)),
                    Some("use s, m, h, d or w, e.g. \"45m\"".into()),
                );
                None
            }
            Some(Span::Seconds(0)) => {
                self.bad(
                    path,
                    format!("{} must be longer than zero", field(path)),
                    None,
                );
                None
            }
            Some(Span::Seconds(s)) => Some(Duration::from_secs(s)),
            None => {
                self.bad(
                    path,
                    format!("invalid duration {text:?} for {}", field(path)),
                    Some("write a number and a unit: 30s, 15m, 2h, 7d or 12w".into()),
                );
                None
            }
        }
    }

    pub(super) fn retention(&mut self, raw: &RawRetention, tz: chrono_tz::Tz) -> Option<Retention> {
        let daily = self.span("retention.daily", raw.daily.as_deref().unwrap_or("7d"));
        let weekly = match raw.weekly.as_deref().unwrap_or("12w") {
            "off" => Some(None),
            text => self.span("retention.weekly", text).map(Some),
        };
        let monthly = match raw.monthly.as_deref() {
            None | Some("off") => Some(None),
            Some(text) => self.span("retention.monthly", text).map(Some),
        };
        let archive = self.schedule(
            "retention.archive",
            raw.archive.as_deref().unwrap_or("0 4 * * SUN"),
            tz,
        );
        Some(Retention {
            daily: daily?,
            weekly: weekly?,
            monthly: monthly?,
            archive: archive?,
        })
    }

    /// `[encryption]`: exactly one of `recipients` and `recipients_file`, every key a public
    /// key. A bad key is reported where it is — its item in this file, or its line in the
    /// recipients file — with its position among the keys, never with its text (it may be a
    /// secret pasted into the wrong place).
    pub(super) fn encryption(
        &mut self,
        raw: &RawEncryption,
        base_dir: &Path,
    ) -> Option<Encryption> {
        let hint = || {
            Some(
                "age recipients look like \"age1…\" (`age-keygen -y identity.txt` prints one); ssh ones like \"ssh-ed25519 AAAA… comment\""
                    .to_string(),
            )
        };
        let (recipients, recipients_file) = match (&raw.recipients, &raw.recipients_file) {
            (Some(_), Some(_)) => {
                self.bad_key(
                    "encryption.recipients_file",
                    "[encryption] has both \"recipients\" and \"recipients_file\"",
                    Some("keep one of them".into()),
                );
                return None;
            }
            (None, None) => {
                // A misspelt key ("recipient") was already reported: no follow-on problem.
                if self.broken.iter().any(|p| p.starts_with("encryption.")) {
                    return None;
                }
                self.bad_key(
                    "encryption",
                    "[encryption] names no recipients",
                    Some(
                        "add recipients = [\"age1…\"] (public keys), or recipients_file = \"FILE\"; remove the section to store backups unencrypted"
                            .into(),
                    ),
                );
                return None;
            }
            (Some(list), None) => {
                let mut found = Vec::new();
                let mut ok = true;
                for (i, text) in list.iter().enumerate() {
                    match crate::keys::Recipient::parse(text) {
                        Ok(r) => found.push(r),
                        Err(e) => {
                            ok = false;
                            self.bad(
                                &format!("encryption.recipients[{i}]"),
                                format!("recipient #{} in [encryption] {e}", i + 1),
                                hint(),
                            );
                        }
                    }
                }
                if list.is_empty() {
                    self.bad(
                        "encryption.recipients",
                        "\"recipients\" in [encryption] is empty",
                        hint(),
                    );
                }
                (ok.then_some(found)?, None)
            }
            (None, Some(file)) => {
                let path = resolve(base_dir, file);
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => {
                        self.bad(
                            "encryption.recipients_file",
                            format!("read recipients_file {}: {e}", path.display()),
                            Some("the file holds public keys, one per line; it must be readable by patina".into()),
                        );
                        return None;
                    }
                };
                let (found, errors) = crate::keys::parse_recipients_file(&text);
                for e in &errors {
                    self.bad_in_file(
                        &path.display().to_string(),
                        e.line,
                        &format!("encryption.recipients_file:{}", e.line),
                        format!(
                            "recipient #{} of recipients_file (named by \"recipients_file\" in [encryption]) {}",
                            e.position, e.error
                        ),
                        hint(),
                    );
                }
                if !errors.is_empty() {
                    return None;
                }
                if found.is_empty() {
                    self.bad(
                        "encryption.recipients_file",
                        format!("recipients_file {} holds no recipients", path.display()),
                        hint(),
                    );
                    return None;
                }
                (found, Some(path))
            }
        };
        let recipients = crate::keys::Recipients::new(recipients)?;
        Some(Encryption {
            recipients,
            recipients_file,
            identity_file: raw.identity_file.as_deref().map(|f| resolve(base_dir, f)),
        })
    }

    pub(super) fn cloudflare(&mut self, raw: &RawCloudflare) -> Option<Cloudflare> {
        if raw.account_id.trim().is_empty() {
            self.bad(
                "cloudflare.account_id",
                "\"account_id\" in [cloudflare] is empty",
                None,
            );
        }
        if raw.api_token.trim().is_empty() {
            self.bad(
                "cloudflare.api_token",
                "\"api_token\" in [cloudflare] is empty",
                None,
            );
        }
        let api_url = raw
            .api_url
            .clone()
            .unwrap_or_else(|| "https://api.cloudflare.com/client/v4".into());
        let ok = self.http_url("cloudflare.api_url", &api_url, false);
        (ok && !raw.account_id.trim().is_empty() && !raw.api_token.trim().is_empty()).then(|| {
            Cloudflare {
                account_id: raw.account_id.clone(),
                api_token: Secret::new(raw.api_token.clone()),
                api_url: api_url.trim_end_matches('/').to_string(),
            }
        })
    }

    pub(super) fn databases(
        &mut self,
        raw: Vec<(usize, RawDatabase)>,
        priorities: &BTreeMap<PriorityLevel, Priority>,
        has_cloudflare: bool,
        tz: chrono_tz::Tz,
        base_dir: &Path,
    ) -> Option<Vec<Database>> {
        let mut out = Vec::new();
        let mut complete = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, db) in raw {
            let at = |key: &str| format!("database[{i}].{key}");
            let mut ok = true;
            if !valid_name(&db.name) {
                self.bad(
                    &at("name"),
                    format!("invalid database name {:?}", db.name),
                    Some(
                        "names are lowercase letters, digits, '_' and '-', starting with a letter \
                         or digit (they become part of object keys)"
                            .into(),
                    ),
                );
                ok = false;
            } else if !self.unique_name(&mut seen, "database", i, &db.name) {
                ok = false;
            }
            let level = match db.priority {
                RawLevel::Critical => PriorityLevel::Critical,
                RawLevel::High => PriorityLevel::High,
                RawLevel::Normal => PriorityLevel::Normal,
                RawLevel::Low => PriorityLevel::Low,
            };
            let declared = priorities.get(&level);
            if declared.is_none()
                && !self
                    .broken
                    .contains(&format!("priorities.{level}.schedule"))
                && !self.broken.contains(&format!("priorities.{level}"))
            {
                let known: Vec<&str> = priorities.keys().map(|l| l.as_str()).collect();
                let hint = if known.is_empty() {
                    format!("declare it: [priorities.{level}] schedule = \"0 3 * * *\"")
                } else {
                    format!(
                        "declare [priorities.{level}] or use one of {}",
                        known
                            .iter()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                self.bad(
                    &at("priority"),
                    format!(
                        "priority {:?} of database {:?} is not declared",
                        level.as_str(),
                        db.name
                    ),
                    Some(hint),
                );
            }
            let (schedule, overridden) = match &db.schedule {
                Some(expr) => (self.schedule(&at("schedule"), expr, tz), true),
                None => (declared.map(|p| p.schedule.clone()), false),
            };
            let source = match db.kind {
                RawKind::Sqlite => {
                    for key in ["id", "mode"] {
                        let set = if key == "id" {
                            db.id.is_some()
                        } else {
                            db.mode.is_some()
                        };
                        if set {
                            self.bad_key(
                                &at(key),
                                format!(
                                    "{key:?} is for kind = \"d1\"; database {:?} is sqlite",
                                    db.name
                                ),
                                Some("remove it, or set kind = \"d1\"".into()),
                            );
                        }
                    }
                    match db.path.as_deref() {
                        Some(p) if !p.is_empty() => Some(SourceSpec::Sqlite {
                            path: resolve(base_dir, p),
                        }),
                        _ => {
                            self.bad(
                                &at("path"),
                                format!("sqlite database {:?} needs a path", db.name),
                                Some("add path = \"data/app.db\" (relative to this file)".into()),
                            );
                            None
                        }
                    }
                }
                RawKind::D1 => {
                    if db.path.is_some() {
                        self.bad_key(
                            &at("path"),
                            format!(
                                "\"path\" is for kind = \"sqlite\"; database {:?} is d1",
                                db.name
                            ),
                            Some("remove it, or set kind = \"sqlite\"".into()),
                        );
                    }
                    if !has_cloudflare {
                        self.bad(
                            &format!("database[{i}]"),
                            format!(
                                "d1 database {:?} needs Cloudflare credentials, but there is no \
                                 [cloudflare] section",
                                db.name
                            ),
                            Some(
                                "add [cloudflare] with account_id = \"${CF_ACCOUNT_ID}\" and \
                                 api_token = \"${CF_API_TOKEN}\""
                                    .into(),
                            ),
                        );
                    }
                    let mode = match db.mode {
                        Some(RawD1Mode::Query) => D1Mode::Query,
                        _ => D1Mode::Export,
                    };
                    match db.id.as_deref() {
                        Some(id) if valid_uuid(id) => Some(SourceSpec::D1 {
                            id: id.to_ascii_lowercase(),
                            mode,
                        }),
                        Some(id) => {
                            self.bad(
                                &at("id"),
                                format!("invalid D1 database id {id:?} for {:?}", db.name),
                                Some(
                                    "a D1 id is a UUID such as \
                                     \"45eae4c7-8ae7-4078-9218-8e1677a4360f\" (see `wrangler d1 list`)"
                                        .into(),
                                ),
                            );
                            None
                        }
                        None => {
                            self.bad(
                                &at("id"),
                                format!("d1 database {:?} needs an id", db.name),
                                Some("add id = \"<uuid>\" (see `wrangler d1 list`)".into()),
                            );
                            None
                        }
                    }
                }
            };
            for (t, table) in db.exclude_tables.iter().enumerate() {
                if table.trim().is_empty() {
                    self.bad(
                        &at(&format!("exclude_tables[{t}]")),
                        "empty table name in exclude_tables",
                        None,
                    );
                }
            }
            let description = db
                .description
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_string);
            if description
                .as_deref()
                .is_some_and(|d| d.chars().count() > 200 || d.contains(['\n', '\r']))
            {
                self.bad(
                    &at("description"),
                    format!(
                        "the description of database {:?} is longer than one line of 200 characters",
                        db.name
                    ),
                    Some("say in a few words what the database holds".into()),
                );
                ok = false;
            }
            match (source, schedule, ok) {
                (Some(source), Some(schedule), true) => out.push(Database {
                    name: db.name,
                    description,
                    source,
                    priority: level,
                    schedule,
                    schedule_overridden: overridden,
                    exclude_tables: db.exclude_tables,
                    enabled: db.enabled.unwrap_or(true),
                }),
                _ => complete = false,
            }
        }
        complete.then_some(out)
    }

    pub(super) fn alerts(&mut self, raw: &RawAlerts, tz: chrono_tz::Tz) -> Option<AlertSettings> {
        let max_duration = self.duration(
            "alerts.max_duration",
            raw.max_duration.as_deref().unwrap_or("45m"),
        );
        let size_deviation = raw.size_deviation.unwrap_or(0.5);
        let deviation_ok = size_deviation.is_finite() && size_deviation > 0.0;
        if !deviation_ok {
            self.bad(
                "alerts.size_deviation",
                "\"size_deviation\" in [alerts] must be a number greater than 0",
                Some("0.5 alerts when a dump is 50% off the recent median".into()),
            );
        }
        let daily_summary = match &raw.daily_summary {
            Some(expr) => self.schedule("alerts.daily_summary", expr, tz).map(Some),
            None => Some(None),
        };
        let renotify = match raw.renotify.as_deref().unwrap_or("24h") {
            "off" => Some(None),
            text => self.duration("alerts.renotify", text).map(Some),
        };
        let stale_after = match raw.stale_after.clone() {
            None => Some(StaleAfter::Intervals(2)),
            Some(RawStaleAfter::Intervals(n)) => {
                match u32::try_from(n) {
                    Ok(n) if n >= 1 => Some(StaleAfter::Intervals(n)),
                    _ => {
                        self.bad(
                        "alerts.stale_after",
                        format!("\"stale_after\" in [alerts] is not a sensible number of intervals: {n}"),
                        Some("write a small number of schedule intervals (2) or a duration (\"8d\")".into()),
                    );
                        None
                    }
                }
            }
            Some(RawStaleAfter::Duration(text)) => match parse_span(&text) {
                Some(Span::Seconds(s)) if s > 0 => {
                    Some(StaleAfter::Duration(Duration::from_secs(s)))
                }
                _ => {
                    self.bad(
                        "alerts.stale_after",
                        format!("invalid \"stale_after\" in [alerts]: {text:?}"),
                        Some(
                            "write a number of schedule intervals (stale_after = 2) or a duration \
                             longer than zero in s, m, h, d or w (stale_after = \"8d\")"
                                .into(),
                        ),
                    );
                    None
                }
            },
        };
        Some(AlertSettings {
            max_duration: max_duration?,
            size_deviation: deviation_ok.then_some(size_deviation)?,
            stale_after: stale_after?,
            daily_summary: daily_summary?,
            renotify: renotify?,
        })
    }

    /// Records `name` of `table[i]` in `seen`; a name already there is reported at this entry,
    /// with the line of the first use. Returns whether the name was new.
    pub(super) fn unique_name(
        &mut self,
        seen: &mut HashMap<String, usize>,
        table: &str,
        i: usize,
        name: &str,
    ) -> bool {
        let Some(first) = seen.get(name) else {
            seen.insert(name.to_string(), i);
            return true;
        };
        let (line, _) = self.line_col(self.offset(&format!("{table}[{first}].name"), At::Value));
        let what = if table == "alert" {
            "alert sink"
        } else {
            table
        };
        self.bad(
            &format!("{table}[{i}].name"),
            format!("duplicate {what} name {name:?}"),
            Some(format!(
                "it is already used on line {line}; names must be unique"
            )),
        );
        false
    }

    pub(super) fn sinks(&mut self, raw: Vec<(usize, RawAlert)>) -> Option<Vec<AlertSink>> {
        let mut out = Vec::new();
        let mut complete = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, a) in raw {
            let at = |key: &str| format!("alert[{i}].{key}");
            let mut ok = true;
            if a.name.trim().is_empty() {
                self.bad(&at("name"), "alert sink name is empty", None);
                ok = false;
            } else if !self.unique_name(&mut seen, "alert", i, &a.name) {
                ok = false;
            }
            let kind = match a.kind {
                RawSinkKind::Webhook => SinkKind::Webhook,
                RawSinkKind::Discord => SinkKind::Discord,
                RawSinkKind::Slack => SinkKind::Slack,
                RawSinkKind::Healthchecks => SinkKind::Healthchecks,
            };
            ok &= self.http_url(&at("url"), &a.url, true);
            if a.on.is_empty() {
                self.bad(
                    &at("on"),
                    format!("alert sink {:?} listens to no events", a.name),
                    Some(format!(
                        "list some of {}",
                        AlertEvent::ALL.map(|e| e.as_str()).join(", ")
                    )),
                );
                ok = false;
            }
            let mut on: Vec<AlertEvent> = Vec::new();
            for e in &a.on {
                let e = match e {
                    RawEvent::Failure => AlertEvent::Failure,
                    RawEvent::Success => AlertEvent::Success,
                    RawEvent::Duration => AlertEvent::Duration,
                    RawEvent::SizeAnomaly => AlertEvent::SizeAnomaly,
                    RawEvent::Stale => AlertEvent::Stale,
                    RawEvent::ArchiveFailed => AlertEvent::ArchiveFailed,
                    RawEvent::VerifyFailed => AlertEvent::VerifyFailed,
                    RawEvent::ReplicaBehind => AlertEvent::ReplicaBehind,
                    RawEvent::Drift => AlertEvent::Drift,
                    RawEvent::ConfigInvalid => AlertEvent::ConfigInvalid,
                    RawEvent::Summary => AlertEvent::Summary,
                    RawEvent::SchemaChanged => AlertEvent::SchemaChanged,
                    RawEvent::Slow => AlertEvent::Slow,
                };
                if !on.contains(&e) {
                    on.push(e);
                }
            }
            let mut headers = BTreeMap::new();
            if let Some(raw_headers) = &a.headers {
                if kind != SinkKind::Webhook && !raw_headers.is_empty() {
                    self.bad_key(
                        &at("headers"),
                        format!(
                            "\"headers\" are for webhook sinks; {:?} is {}",
                            a.name,
                            kind.as_str()
                        ),
                        Some("remove them, or set kind = \"webhook\"".into()),
                    );
                    ok = false;
                }
                for (name, value) in raw_headers {
                    let valid = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
                    if !valid {
                        self.bad_key(
                            &at(&format!("headers.{name}")),
                            format!("invalid HTTP header name {name:?}"),
                            None,
                        );
                        ok = false;
                    }
                    headers.insert(name.clone(), Secret::new(value.clone()));
                }
            }
            if ok {
                out.push(AlertSink {
                    name: a.name,
                    kind,
                    url: Secret::new(a.url),
                    on,
                    headers,
                });
            } else {
                complete = false;
            }
        }
        complete.then_some(out)
    }
}

/// `30s 15m 2h 7d 12w` (seconds) or `12mo` (months).
pub(super) fn parse_span(text: &str) -> Option<Span> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    let unit = match &text[digits..] {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        "mo" => return u32::try_from(n).ok().map(Span::Months),
        _ => return None,
    };
    n.checked_mul(unit).map(Span::Seconds)
}

pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The hyphenated 8-4-4-4-12 form D1 uses.
pub(super) fn valid_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

pub(super) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// This host's name (Linux), for `[cluster] node`'s default.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}
