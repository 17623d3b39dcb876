//! Rebuilding plugin sets: reuse of unchanged plugins, a broken file keeping the old version
//! serving, the precompiled-artifact cache, and hot reload through the directory watcher.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mgre_plugin::{
    Hook, LoadStep, PluginManager, PluginSet, PluginState, PluginStatus, PolicyVerdict, Runtime,
    RuntimeConfig, RuntimeError, SiteContext, WorkerPlugins,
};

use common::*;

fn status(set: &PluginSet, name: &str) -> PluginStatus {
    set.status()
        .into_iter()
        .find(|s| s.name == name)
        .expect("plugin in status")
}

fn class_of(w: &mut WorkerPlugins, protocol: u8) -> u32 {
    let mut slots = batch(&[(protocol, 1)]);
    let mut out = [PolicyVerdict::default()];
    w.run(Instant::now(), &mut slots, &mut out);
    out[0].class
}

/// Replaces `path` the way deploy tools and most editors do: write a temp file, rename.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn unchanged_plugins_are_reused_and_generations_increase() {
    let rt = runtime();
    let site = SiteContext::default();
    let specs = [spec("good", "good", "{}"), spec("trap", "trap", "{}")];
    let g1 = rt.build_set(&site, &specs, None);
    let g2 = rt.build_set(&site, &specs, Some(&g1));
    assert!(g2.generation() > g1.generation());
    assert!(
        g2.same_as(&g1),
        "same files, specs and site: same loaded plugins"
    );
    assert_eq!(status(&g2, "good").loaded_generation, Some(g1.generation()));

    // A changed spec (config) reloads only that plugin.
    let changed = [
        spec("good", "good", r#"{"class-offset": 5}"#),
        spec("trap", "trap", "{}"),
    ];
    let g3 = rt.build_set(&site, &changed, Some(&g2));
    assert_eq!(status(&g3, "good").loaded_generation, Some(g3.generation()));
    assert_eq!(status(&g3, "trap").loaded_generation, Some(g1.generation()));
    // Workers keep the instances of reused plugins across a refresh.
    let g3 = Arc::new(g3);
    let mut w = WorkerPlugins::new(Arc::new(g2));
    w.refresh(&g3);
    assert_eq!(w.generation(), g3.generation());
    assert_eq!(class_of(&mut w, 17), 9, "trap's class 9 overrides good's 6");
    assert_eq!(status(&g3, "trap").stats.reinstantiations, 0);
}

#[test]
fn a_broken_file_keeps_the_old_version_serving() {
    let rt = runtime();
    let site = SiteContext::default();
    let dir = scratch("broken");
    let path = dir.join("p.wasm");
    fs::write(&path, fixture_bytes("good")).unwrap();
    let specs = [spec_at("p", path.clone(), "{}")];
    let g1 = Arc::new(rt.build_set(&site, &specs, None));
    let mut w = WorkerPlugins::new(g1.clone());
    assert_eq!(class_of(&mut w, 17), 1);

    let good = fixture_bytes("good");
    let mut previous = g1.clone();
    for (broken, step) in [
        (good[..good.len() / 2].to_vec(), LoadStep::Decode),
        (fixture_bytes("otherworld"), LoadStep::Link),
        (Vec::new(), LoadStep::Decode),
    ] {
        fs::write(&path, &broken).unwrap();
        let next = Arc::new(rt.build_set(&site, &specs, Some(&previous)));
        assert_eq!(next.load_errors().len(), 1);
        assert_eq!(
            next.load_errors()[0].step(),
            step,
            "{}",
            next.load_errors()[0]
        );
        let st = status(&next, "p");
        assert_eq!(
            st.state,
            PluginState::FailedToLoad {
                serving_previous: true
            }
        );
        assert_eq!(st.loaded_generation, Some(g1.generation()));
        assert!(st.last_error.unwrap().contains(&step.to_string()));
        assert_eq!(next.chain(Hook::Classify).collect::<Vec<_>>(), ["p"]);
        w.refresh(&next);
        assert_eq!(class_of(&mut w, 17), 1, "the old version keeps serving");
        previous = next;
    }
    assert_eq!(previous.reload_failures(), 3);
    assert_eq!(status(&previous, "p").reload_failures, 3);

    // A good new version replaces it.
    fs::write(&path, fixture_bytes("trap")).unwrap();
    let fixed = Arc::new(rt.build_set(&site, &specs, Some(&previous)));
    assert!(fixed.load_errors().is_empty());
    let st = status(&fixed, "p");
    assert_eq!(st.state, PluginState::Active);
    assert_eq!(st.loaded_generation, Some(fixed.generation()));
    assert_eq!(st.plugin_name.as_deref(), Some("trap"));
    w.refresh(&fixed);
    assert_eq!(class_of(&mut w, 17), 9);
}

#[test]
fn the_artifact_cache_is_used_on_the_second_load() {
    let cache = scratch("cache").join("artifacts");
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let specs = [spec("good", "good", "{}")];
    let site = SiteContext::default();

    let rt = Runtime::new(config.clone()).unwrap();
    assert_eq!(
        fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let cold = rt.build_set(&site, &specs, None);
    let cold = status(&cold, "good");
    assert!(!cold.from_cache);
    let artifact = rt.artifact_path(&cold.content_hash.unwrap()).unwrap();
    assert!(artifact.exists());
    let artifact_len = fs::metadata(&artifact).unwrap().len();
    drop(rt);

    let rt = Runtime::new(config.clone()).unwrap();
    let warm_set = rt.build_set(&site, &specs, None);
    let warm = status(&warm_set, "good");
    assert!(warm.from_cache);
    println!(
        "load time: cold {:?} (componentize + compile), warm {:?} (cached artifact)",
        cold.load_time.unwrap(),
        warm.load_time.unwrap()
    );
    assert!(warm.load_time < cold.load_time);

    // A corrupt artifact is detected, replaced, and the plugin still loads. It is
    // overwritten in place while `warm_set` (loaded from it) is alive: artifacts are read,
    // not mapped, so this cannot SIGBUS the process.
    fs::write(&artifact, b"\x7fELF but not really").unwrap();
    let rt = Runtime::new(config).unwrap();
    let set = Arc::new(rt.build_set(&site, &specs, None));
    assert!(set.load_errors().is_empty());
    assert!(!status(&set, "good").from_cache);
    assert_eq!(fs::metadata(&artifact).unwrap().len(), artifact_len);
    assert_eq!(class_of(&mut WorkerPlugins::new(set), 6), 2);
    // No temp files are left behind.
    let names: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(class_of(&mut WorkerPlugins::new(Arc::new(warm_set)), 17), 1);
}

#[test]
fn a_shared_cache_directory_is_refused() {
    let dir = scratch("cache-perms").join("artifacts");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir),
        ..RuntimeConfig::default()
    });
    assert!(
        matches!(err, Err(RuntimeError::CacheDir { .. })),
        "{:?}",
        err.err()
    );
}

/// Waits until `f` holds, for at most 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_watcher_reloads_settled_files() {
    let dir = scratch("watch");
    let path = dir.join("p.wasm");
    fs::write(&path, fixture_bytes("good")).unwrap();
    let manager = Arc::new(PluginManager::new(
        runtime(),
        SiteContext::default(),
        vec![spec_at("p", path.clone(), "{}")],
    ));
    let g1 = manager.current();
    assert_eq!(status(&g1, "p").plugin_name.as_deref(), Some("good"));
    let _watcher = manager.watch(Duration::from_millis(200)).unwrap();
    let mut w = WorkerPlugins::new(g1.clone());

    // Write-then-rename.
    replace(&path, &fixture_bytes("trap"));
    eventually("the renamed-in plugin", || {
        status(&manager.current(), "p").plugin_name.as_deref() == Some("trap")
    });
    let g2 = manager.current();
    assert!(g2.generation() > g1.generation());
    w.refresh(&manager.published().load());
    assert_eq!(class_of(&mut w, 17), 9);

    // Truncate-then-write with a pause longer than the quiet period: the half-written file
    // fails to load (the old version keeps serving), the completed file loads.
    let good = fixture_bytes("good");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&good[..good.len() / 2]).unwrap();
    f.flush().unwrap();
    eventually("the half-written file to be reported", || {
        let st = status(&manager.current(), "p");
        st.state
            == PluginState::FailedToLoad {
                serving_previous: true,
            }
    });
    let g3 = manager.current();
    assert_eq!(status(&g3, "p").plugin_name.as_deref(), Some("trap"));
    w.refresh(&g3);
    assert_eq!(class_of(&mut w, 17), 9, "still the previous version");
    f.write_all(&good[good.len() / 2..]).unwrap();
    drop(f);
    eventually("the completed file", || {
        let st = status(&manager.current(), "p");
        st.state == PluginState::Active && st.plugin_name.as_deref() == Some("good")
    });
    w.refresh(&manager.published().load());
    assert_eq!(class_of(&mut w, 17), 1);
    assert!(manager.current().reload_failures() >= 1);

    // Unrelated and hidden files do not produce a new generation.
    let before = manager.current().generation();
    fs::write(dir.join(".p.wasm.swp"), b"swap").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(manager.current().generation(), before);
}

#[test]
fn reload_without_changes_publishes_nothing() {
    let manager = PluginManager::new(
        runtime(),
        SiteContext::default(),
        vec![spec("good", "good", "{}")],
    );
    let first = manager.current();
    let again = manager.reload();
    assert!(Arc::ptr_eq(&first, &again));
    let changed = manager.reconfigure(
        SiteContext::default(),
        vec![spec("good", "good", r#"{"class-offset": 1}"#)],
    );
    assert!(changed.generation() > first.generation());
    assert!(Arc::ptr_eq(&changed, &manager.current()));
}
