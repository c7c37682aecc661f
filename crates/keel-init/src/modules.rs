//! Loading kernel modules with their dependencies, from the initramfs's
//! trimmed `modules.dep`, in dependency order.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

/// A module that cannot be resolved.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModError {
    /// Not in modules.dep.
    #[error("module {0} is not in modules.dep")]
    Unknown(String),
    /// Dependency cycle (a corrupt modules.dep).
    #[error("dependency cycle through {0} in modules.dep")]
    Cycle(String),
}

fn name_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// Module paths to load for `wanted`, each after its dependencies.
pub fn load_order(modules_dep: &str, wanted: &[String]) -> Result<Vec<String>, ModError> {
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        let m = m.trim().to_string();
        by_name.insert(name_of(&m), m.clone());
        deps.insert(m, rest.split_whitespace().map(str::to_string).collect());
    }
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        m: &str,
        deps: &BTreeMap<String, Vec<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ModError> {
        if done.contains(m) {
            return Ok(());
        }
        if path.iter().any(|p| p == m) {
            return Err(ModError::Cycle(m.into()));
        }
        path.push(m.into());
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, done, path, order)?;
        }
        path.pop();
        done.insert(m.into());
        order.push(m.into());
        Ok(())
    }
    for w in wanted {
        let p = by_name
            .get(&w.replace('-', "_"))
            .ok_or_else(|| ModError::Unknown(w.clone()))?;
        visit(p, &deps, &mut done, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// [`load_order`] grouped into levels: every module's dependencies are in
/// earlier levels, so the modules of one level can be loaded concurrently.
pub fn load_levels(modules_dep: &str, wanted: &[String]) -> Result<Vec<Vec<String>>, ModError> {
    let order = load_order(modules_dep, wanted)?;
    let deps: BTreeMap<&str, Vec<&str>> = modules_dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, rest)| (m.trim(), rest.split_whitespace().collect()))
        .collect();
    // Crypto algorithms (kernel/crypto/) are found by name through the crypto
    // API when another module initialises (libcrc32c asks for "crc32c": a soft
    // dependency modules.dep cannot express). Load them first, one at a time.
    let (crypto, rest): (Vec<&String>, Vec<&String>) =
        order.iter().partition(|m| m.contains("kernel/crypto/"));
    let mut levels: Vec<Vec<String>> = crypto.iter().map(|m| vec![(*m).clone()]).collect();
    let base = levels.len();
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    // `order` lists dependencies first, so each module's deps have a level
    // (crypto modules are already loaded and have none here).
    for m in rest {
        let l = deps
            .get(m.as_str())
            .into_iter()
            .flatten()
            .filter_map(|d| level.get(d).map(|l| l + 1))
            .max()
            .unwrap_or(0);
        level.insert(m.as_str(), l);
        if levels.len() <= base + l {
            levels.resize_with(base + l + 1, Vec::new);
        }
        levels[base + l].push(m.clone());
    }
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_first_once() {
        let dep = "a/ext4.ko: b/jbd2.ko c/mbcache.ko\nb/jbd2.ko:\nc/mbcache.ko:\nd/dm-verity.ko: e/dm-mod.ko\ne/dm-mod.ko:\n";
        let o = load_order(dep, &["ext4".into(), "dm_verity".into(), "jbd2".into()]).unwrap();
        assert_eq!(
            o,
            vec![
                "b/jbd2.ko",
                "c/mbcache.ko",
                "a/ext4.ko",
                "e/dm-mod.ko",
                "d/dm-verity.ko"
            ]
        );
    }

    #[test]
    fn levels_put_dependencies_first() {
        let dep = "a/ext4.ko: b/jbd2.ko c/mbcache.ko\nb/jbd2.ko: c/mbcache.ko\nc/mbcache.ko:\nd/dm-verity.ko: e/dm-mod.ko\ne/dm-mod.ko:\n";
        let l = load_levels(dep, &["ext4".into(), "dm_verity".into()]).unwrap();
        assert_eq!(
            l,
            vec![
                vec!["c/mbcache.ko".to_string(), "e/dm-mod.ko".into()],
                vec!["b/jbd2.ko".to_string(), "d/dm-verity.ko".into()],
                vec!["a/ext4.ko".to_string()],
            ]
        );
    }

    #[test]
    fn crypto_modules_load_first_alone() {
        let dep = "kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko\nkernel/lib/libcrc32c.ko:\nkernel/crypto/crc32c_generic.ko:\n";
        let l = load_levels(dep, &["crc32c_generic".into(), "erofs".into()]).unwrap();
        assert_eq!(
            l,
            vec![
                vec!["kernel/crypto/crc32c_generic.ko".to_string()],
                vec!["kernel/lib/libcrc32c.ko".to_string()],
                vec!["kernel/fs/erofs/erofs.ko".to_string()],
            ]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            load_order("a.ko:\n", &["b".into()]).unwrap_err(),
            ModError::Unknown("b".into())
        );
        assert_eq!(
            load_order("a.ko: b.ko\nb.ko: a.ko\n", &["a".into()]).unwrap_err(),
            ModError::Cycle("a.ko".into())
        );
    }
}
