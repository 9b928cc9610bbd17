use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn from(file: &str, env: &[(&str, &str)], flags: &BackendArgs) -> anyhow::Result<Settings> {
    Settings::from_sources(Some(("troupe.toml", file)), &vars(env), flags)
}

fn error(file: &str, env: &[(&str, &str)]) -> String {
    format!(
        "{:#}",
        from(file, env, &BackendArgs::default()).unwrap_err()
    )
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let file = "[backend]\nllm = \"mock\"\nstore = \"memory\"\nmodel = \"m1\"\n\
                [orchestrator]\nmax_attempts = 5\nsubtask_timeout = \"45s\"\n";
    let env = [
        ("TROUPE_BACKEND__STORE", "sqlite://env.db"),
        ("TROUPE_BACKEND__MODEL", "7"),
        ("TROUPE_ORCHESTRATOR__MAX_ATTEMPTS", "4"),
        ("TROUPE_ORCHESTRATOR__TASK_TIMEOUT", "2m"),
        ("TROUPE_LLM__BREAKER__FAILURE_THRESHOLD", "9"),
        ("TROUPE_LLM", "openai"),
    ];
    let flags = BackendArgs {
        store: Some("sqlite://x.db".into()),
        ..BackendArgs::default()
    };
    let s = from(file, &env, &flags).unwrap();
    assert_eq!(
        s.backend.llm.as_deref(),
        Some("mock"),
        "TROUPE_LLM is a flag's variable, read by clap"
    );
    assert_eq!(s.store_url(), "sqlite://x.db");
    assert_eq!(
        s.backend.model.as_deref(),
        Some("7"),
        "a number where text is wanted stays text"
    );
    let runtime = s.runtime();
    assert_eq!(runtime.orchestrator.max_attempts, 4);
    assert_eq!(
        runtime.orchestrator.subtask_timeout(),
        Duration::from_secs(45)
    );
    assert_eq!(runtime.orchestrator.task_timeout, Duration::from_secs(120));
    assert_eq!(runtime.llm.breaker.failure_threshold, 9);
    let env_only = from(
        "",
        &[("TROUPE_BACKEND__STORE", "sqlite://env.db")],
        &BackendArgs::default(),
    )
    .unwrap();
    assert_eq!(env_only.store_url(), "sqlite://env.db");
}

#[test]
fn lists_come_from_toml_arrays_or_commas() {
    for raw in [r#"["openai", "http://h/v1#m"]"#, "openai, http://h/v1#m"] {
        let s = from(
            "",
            &[("TROUPE_BACKEND__FALLBACK_LLM", raw)],
            &BackendArgs::default(),
        )
        .unwrap();
        assert_eq!(
            s.backend.fallback_llm,
            vec!["openai", "http://h/v1#m"],
            "{raw}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_values_are_clear_errors_that_name_their_source() {
    let err = error("[orchestrator]\nmax_atempts = 5\n", &[]);
    assert!(
        err.contains("max_atempts") && err.contains("troupe.toml"),
        "{err}"
    );
    let err = error("[workers]\nper_role = 0\n", &[]);
    assert!(err.contains("workers.per_role"), "{err}");
    let err = error("", &[("TROUPE_ORCHESTRATOR__MAX_ATEMPTS", "5")]);
    assert!(
        err.contains("TROUPE_ORCHESTRATOR__MAX_ATEMPTS") && err.contains("max_atempts"),
        "{err}"
    );
    let err = error("", &[("TROUPE_NOPE__X", "1")]);
    assert!(
        err.contains("TROUPE_NOPE__X") && err.contains("nope"),
        "{err}"
    );
    let err = error("", &[("TROUPE_ORCHESTRATOR__MAX_ATTEMPTS", "many")]);
    assert!(err.contains("TROUPE_ORCHESTRATOR__MAX_ATTEMPTS"), "{err}");
    let err = error("", &[("TROUPE_BACKEND__STRUCTURED_OUTPUT", "xml")]);
    assert!(err.contains("xml"), "{err}");
    let err = error("[backend\n", &[]);
    assert!(err.contains("troupe.toml"), "{err}");
    let err = Settings::load(
        Some(Path::new("/nonexistent/troupe.toml")),
        &[],
        &BackendArgs::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn hinted_keys_stay_unset_unless_given() {
    let s = from("", &[], &BackendArgs::default()).unwrap();
    let runtime = s.runtime();
    assert_eq!(runtime.orchestrator.subtask_timeout, None);
    assert_eq!(runtime.llm.timeout, None);
    let s = from("[llm]\ntimeout = \"2m\"\n", &[], &BackendArgs::default()).unwrap();
    assert_eq!(s.runtime().llm.timeout, Some(Duration::from_secs(120)));
}

#[test]
fn the_postgres_table_sets_the_store_options_within_bounds() {
    let defaults = PostgresOptions::default();
    let none = from("", &[], &BackendArgs::default()).unwrap();
    assert_eq!(none.postgres.options().writers, defaults.writers);
    assert_eq!(
        none.postgres.options().max_connections,
        defaults.max_connections
    );
    let s = from(
        "[postgres]\nwriters = 1\nmax_connections = 20\n",
        &[],
        &BackendArgs::default(),
    )
    .unwrap();
    let options = s.postgres.options();
    assert_eq!((options.writers, options.max_connections), (1, 20));
    assert_eq!(options.max_batch, defaults.max_batch);
    for (text, key) in [
        ("[postgres]\nwriters = 0\n", "postgres.writers is 0"),
        ("[postgres]\nwriters = 65\n", "postgres.writers is 65"),
        (
            "[postgres]\nmax_connections = 0\n",
            "postgres.max_connections is 0",
        ),
        ("[postgres]\npool = 3\n", "pool"),
    ] {
        let err = error(text, &[]);
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn the_readme_blocks_together_form_one_valid_file() {
    // Every table at once, as a user pasting several examples would write it.
    let file = "[backend]\nllm = \"mock\"\n[local]\nctx_size = 4096\n[bus]\nvisibility_timeout = \"30s\"\n\
                [postgres]\nwriters = 2\n[log]\nformat = \"json\"\n[traces]\nsample_ratio = 0.5\n\
                [orchestrator]\nmax_replans = 2\n[workers]\nper_role = 1\n[llm]\nmax_attempts = 2\n\
                [retry.store]\nmax_attempts = 3\n[coordinator]\nlease_ttl = \"20s\"\n";
    from(file, &[], &BackendArgs::default()).unwrap();
}
