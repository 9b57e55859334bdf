use std::collections::BTreeMap;

use super::*;

/// The instructions of each stage of the root `Dockerfile`, continuation lines joined.
fn dockerfile_stages() -> BTreeMap<String, Vec<(String, String)>> {
    let text = std::fs::read_to_string(crate::root().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut stage = String::new();
    for line in joined.iter().filter(|l| !l.trim().is_empty()) {
        let (op, rest) = line.split_once(char::is_whitespace).unwrap();
        let rest = rest.trim().to_owned();
        if op.eq_ignore_ascii_case("FROM") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(words.len(), 3, "FROM without a stage name: {line}");
            stage = words[2].to_owned();
            stages
                .entry(stage.clone())
                .or_default()
                .push(("FROM".into(), words[0].into()));
        } else {
            stages
                .entry(stage.clone())
                .or_default()
                .push((op.to_ascii_uppercase(), rest));
        }
    }
    stages
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text} is not a JSON list: {e}"))
}

/// The config a Dockerfile stage gives its image.
fn stage_config(instructions: &[(String, String)]) -> oci::Config {
    let mut config = oci::Config::default();
    for (op, rest) in instructions {
        match op.as_str() {
            "USER" => config.user = Some(rest.clone()),
            "ENV" => config
                .env
                .extend(rest.split_whitespace().map(str::to_owned)),
            "EXPOSE" => config
                .exposed_ports
                .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap())),
            "ENTRYPOINT" => config.entrypoint = json_list(rest),
            "CMD" => config.cmd = json_list(rest),
            "WORKDIR" => config.workdir = Some(rest.clone()),
            "FROM" | "COPY" => {}
            other => panic!("{other} in a final stage is not compared with `xtask image`"),
        }
    }
    config
}

#[test]
fn the_dockerfile_builds_the_same_images_as_xtask_image() {
    let stages = dockerfile_stages();
    let build = &stages["build"];
    let run = build
        .iter()
        .find(|(op, _)| op == "RUN")
        .map(|(_, r)| r.as_str())
        .unwrap();
    assert!(
        run.contains("cargo xtask image rootfs target/release /out"),
        "the build stage writes the images' files with `xtask image rootfs`: {run}"
    );
    for spec in published() {
        assert!(
            run.contains(&spec.build_args().join(" ")),
            "the build stage builds {}: {run}",
            spec.file
        );
        if spec.file != spec.binary {
            let built = run.find(&spec.build_args().join(" ")).unwrap();
            let kept = format!(
                "cp target/release/{} target/release/{}",
                spec.binary, spec.file
            );
            let plain = run.rfind(&format!("-p {} --bin {}", spec.package, spec.binary));
            assert!(
                run[built..].contains(&kept) && plain > Some(built),
                "the build stage keeps {} as {} before building the default {}: {run}",
                spec.binary,
                spec.file,
                spec.binary
            );
        }
        let stage = stages
            .get(spec.name)
            .unwrap_or_else(|| panic!("the Dockerfile has no stage {:?}", spec.name));
        assert_eq!(stage[0], ("FROM".into(), "scratch".into()), "{}", spec.name);
        let copies: Vec<&str> = stage
            .iter()
            .filter(|(op, _)| op == "COPY")
            .map(|(_, r)| r.as_str())
            .collect();
        assert_eq!(
            copies,
            [format!("--from=build /out/{}/ /", spec.name)],
            "the {} stage copies exactly its rootfs",
            spec.name
        );
        assert_eq!(stage_config(stage), spec.config, "{}", spec.name);
    }
    let last_from = std::fs::read_to_string(crate::root().join("Dockerfile"))
        .unwrap()
        .lines()
        .rfind(|l| l.starts_with("FROM"))
        .map(str::to_owned)
        .unwrap();
    assert!(
        last_from.ends_with("AS fiso"),
        "`docker build .` builds the data plane: the last stage is fiso ({last_from})"
    );
}

/// A tree written for the Dockerfile and the OCI layer hold the same paths, kinds and modes.
#[test]
fn the_rootfs_tree_and_the_layer_agree() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    // A real dynamically linked program stands in for the release binary.
    std::fs::copy("/bin/true", bin_dir.join("fiso")).unwrap();
    let spec = &published()[0];
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let files = files(spec, &bin_dir, &work).unwrap();

    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"/usr/local/bin/fiso"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.contains("libc.so")),
        "the C library is in the image: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.contains("ld-linux")),
        "the dynamic loader is in the image: {paths:?}"
    );

    let tree = dir.path().join("tree");
    for file in &files {
        oci::materialize(file, &tree).unwrap();
    }
    let mut on_disk = Vec::new();
    walk(&tree, &tree, &mut on_disk);
    on_disk.sort();

    let archive = dir.path().join("x.tar");
    image(spec, &bin_dir, &work)
        .unwrap()
        .write_archive(&archive)
        .unwrap();
    let mut in_layer = layer_entries(&archive);
    in_layer.sort();
    assert_eq!(on_disk, in_layer);
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, bool, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        out.push((rel, meta.is_dir(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            walk(root, &entry.path(), out);
        }
    }
}

/// (path, is a directory, mode) of every entry of the archive's one layer.
fn layer_entries(archive: &Path) -> Vec<(String, bool, u32)> {
    use std::io::Read;
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut biggest = Vec::new();
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if bytes.len() > biggest.len() {
            biggest = bytes;
        }
    }
    let mut layer = tar::Archive::new(biggest.as_slice());
    layer
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let is_dir = e.header().entry_type().is_dir();
            (
                path.trim_end_matches('/').to_owned(),
                is_dir,
                e.header().mode().unwrap(),
            )
        })
        .collect()
}
