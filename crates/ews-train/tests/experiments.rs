//! The experiment files against the hyper-parameter tables of `experiments/README.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ews_train::TrainConfig;

fn experiments_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

/// The cells of a markdown table row, trimmed; `None` for lines that are no table rows or
/// are its separator.
fn cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    if !line.starts_with('|') || line.starts_with("|---") {
        return None;
    }
    let inner = line.trim_matches('|');
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

fn unquote(cell: &str) -> &str {
    cell.trim().trim_matches('`')
}

/// `key = value` in TOML syntax as a one-entry table.
fn field(text: &str) -> (String, toml::Value) {
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("`{text}`: {e}"));
    assert_eq!(table.len(), 1, "`{text}` is one field");
    table.into_iter().next().unwrap()
}

/// `key = value` pairs in table order.
type Fields = Vec<(String, toml::Value)>;

struct Tables {
    /// Recipe name -> its fields.
    recipes: BTreeMap<String, Fields>,
    /// File name -> (its recipes, its own fields).
    files: BTreeMap<String, (Vec<String>, Fields)>,
}

/// Reads the recipe tables (`### Recipe `name``, rows `| field | value | source |`) and the
/// file table (`| file | paper row | recipes | own fields |`).
fn read_tables(readme: &str) -> Tables {
    let mut recipes = BTreeMap::new();
    let mut files = BTreeMap::new();
    let mut recipe: Option<String> = None;
    for line in readme.lines() {
        if let Some(rest) = line.strip_prefix("### Recipe `") {
            recipe = Some(rest.split('`').next().unwrap().to_string());
            recipes.insert(recipe.clone().unwrap(), Vec::new());
            continue;
        }
        if line.starts_with("## ") {
            recipe = None;
        }
        let Some(row) = cells(line) else { continue };
        if row[0] == "field" || row[0] == "file" {
            continue;
        }
        if let Some(name) = &recipe {
            assert_eq!(row.len(), 3, "recipe {name}: {line}");
            assert!(
                !row[2].is_empty(),
                "recipe {name}: `{}` cites no source",
                row[0]
            );
            let text = format!("{} = {}", unquote(&row[0]), unquote(&row[1]));
            recipes.get_mut(name).unwrap().push(field(&text));
        } else if row.len() == 4 && row[0].ends_with(".toml`") {
            let file = unquote(&row[0]).to_string();
            let uses = row[2].split(',').map(|r| unquote(r).to_string()).collect();
            let own = row[3].split(';').map(|f| field(unquote(f))).collect();
            assert!(
                files.insert(file.clone(), (uses, own)).is_none(),
                "{file} twice"
            );
        }
    }
    Tables { recipes, files }
}

#[test]
fn every_experiment_file_holds_exactly_the_fields_its_readme_row_gives() {
    let dir = experiments_dir();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let tables = read_tables(&readme);
    assert!(
        tables.recipes.len() >= 10,
        "recipes: {:?}",
        tables.recipes.keys()
    );
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            on_disk.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    on_disk.sort();
    let listed: Vec<String> = tables.files.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "files on disk against the README's file table"
    );
    for (file, (uses, own)) in &tables.files {
        let mut want = toml::Table::new();
        let recipe_fields = uses.iter().flat_map(|r| {
            tables
                .recipes
                .get(r)
                .unwrap_or_else(|| panic!("{file}: no recipe `{r}`"))
                .iter()
        });
        for (key, value) in own.iter().chain(recipe_fields) {
            assert!(
                want.insert(key.clone(), value.clone()).is_none(),
                "{file}: `{key}` given twice"
            );
        }
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let have: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(have, want, "{file} against experiments/README.md");
        TrainConfig::from_toml_file(&path)
            .and_then(|c| c.validate())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn paper_presets_are_the_experiment_files() {
    let dir = experiments_dir();
    let read = |name: &str| TrainConfig::from_toml_file(&dir.join(name)).unwrap();
    assert_eq!(
        read("table4-preact18-at-ews.toml"),
        TrainConfig::paper_adversarial("cifar10")
    );
    for dataset in ["cifar10", "cifar100"] {
        assert_eq!(
            read(&format!("table1-{dataset}-standard-ews.toml")),
            TrainConfig::paper_cifar(dataset)
        );
    }
}

#[test]
fn reference_settings_that_differ_between_the_scripts_are_pinned() {
    use ews_models::WidthRounding;
    use ews_train::config::AttackBn;
    use ews_train::loss::KlReduction;
    let dir = experiments_dir();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".toml") {
            continue;
        }
        let c = TrainConfig::from_toml_file(&path).unwrap();
        if name.starts_with("table1-") || name.starts_with("table5-") {
            // train_cifar.py: KLDivLoss() mean, weight decay 1e-4, + 1e-6 rounding, severity 5.
            assert_eq!(c.weight_decay, 1e-4, "{name}");
            if c.method == ews_train::Method::Ews {
                assert_eq!(c.kl_reduction, KlReduction::Official, "{name}");
                assert_eq!(c.subnet_rounding, WidthRounding::Release, "{name}");
            }
            if name.contains("augmix") {
                assert_eq!(c.augmix_severity, 5, "{name}");
            }
        } else if name.starts_with("imagenet-") {
            // train_imnet.py: KLDivLoss() mean, weight decay 1e-4, + 1e-6 rounding, severity
            // 1; the paper's 5 warm-up epochs within 180; the DeepAugment copies.
            assert_eq!(c.weight_decay, 1e-4, "{name}");
            assert_eq!((c.epochs, c.warmup_epochs), (180, 5.0), "{name}");
            assert_eq!(c.model, "imagenet-resnet50", "{name}");
            if c.method == ews_train::Method::Ews {
                assert_eq!(c.kl_reduction, KlReduction::Official, "{name}");
                assert_eq!(c.subnet_rounding, WidthRounding::Release, "{name}");
            }
            if name.contains("augmix") {
                assert_eq!(c.augmix_severity, 1, "{name}");
            }
            assert_eq!(
                c.extra_train_folders.len(),
                if name.contains("deepaugment") { 2 } else { 0 },
                "{name}"
            );
        } else {
            assert!(name.starts_with("table4-"), "{name}");
            assert_eq!(c.weight_decay, 5e-4, "{name}");
            assert_eq!(c.kl_reduction, KlReduction::BatchMean, "{name}");
            let trades = name.contains("trades");
            assert_eq!(
                c.explicit_normalization().unwrap() == Some(ews_models::Normalization::identity()),
                trades,
                "{name}: TRADES feeds raw inputs, AT normalises"
            );
            assert_eq!(
                c.resolved_attack_bn(),
                if trades {
                    AttackBn::Eval
                } else {
                    AttackBn::Train
                },
                "{name}"
            );
            let ls = if name.ends_with("-ews.toml") {
                0.1
            } else {
                0.0
            };
            assert_eq!(c.label_smoothing, ls, "{name}");
            if c.method == ews_train::Method::Ews {
                assert_eq!(c.subnet_rounding, WidthRounding::Exact, "{name}");
            }
        }
    }
}
