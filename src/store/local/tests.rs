use super::*;

fn bytes(s: &str) -> SecretBytes {
    SecretBytes::new(s.as_bytes().to_vec())
}

async fn text(store: &LocalStore, name: &SecretName, sel: Selector) -> Option<String> {
    store
        .get_value(name, &sel)
        .await
        .unwrap()
        .map(|v| String::from_utf8(v.value.as_bytes().to_vec()).unwrap())
}

#[tokio::test]
async fn puts_move_current_and_previous_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let n = SecretName::new("app/db");
    {
        let s = LocalStore::open(dir.path()).unwrap();
        s.create_secret(&n, &bytes("one"), "t1").await.unwrap();
        assert_eq!(text(&s, &n, Selector::Stage(Stage::Previous)).await, None);
        s.put_value(&n, &bytes("two"), "t2").await.unwrap();
        s.put_value(&n, &bytes("three"), "t3").await.unwrap();
    }
    let s = LocalStore::open(dir.path()).unwrap();
    assert_eq!(
        text(&s, &n, Selector::Stage(Stage::Current)).await.unwrap(),
        "three"
    );
    assert_eq!(
        text(&s, &n, Selector::Stage(Stage::Previous))
            .await
            .unwrap(),
        "two"
    );
    assert_eq!(
        text(&s, &n, Selector::Id(VersionId::new("t1")))
            .await
            .unwrap(),
        "one"
    );
    assert_eq!(s.list_version_ids(&n).await.unwrap().len(), 3);
}

#[tokio::test]
async fn same_token_is_idempotent_and_conflicting_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    let n = SecretName::new("x");
    s.create_secret(&n, &bytes("a"), "t1").await.unwrap();
    // A retried CreateSecret with its token is the same version.
    s.create_secret(&n, &bytes("a"), "t1").await.unwrap();
    s.put_value(&n, &bytes("b"), "t2").await.unwrap();
    s.put_value(&n, &bytes("b"), "t2").await.unwrap();
    assert_eq!(s.list_version_ids(&n).await.unwrap().len(), 2);
    let e = s.put_value(&n, &bytes("c"), "t2").await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::ResourceExists);
    assert_eq!(
        text(&s, &n, Selector::Stage(Stage::Previous))
            .await
            .unwrap(),
        "a"
    );
}

#[tokio::test]
async fn binary_values_round_trip_and_missing_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let n = SecretName::new("bin");
    {
        let s = LocalStore::open(dir.path()).unwrap();
        s.create_secret(&n, &SecretBytes::new(vec![0, 159, 255]), "t")
            .await
            .unwrap();
        let e = s
            .get_value(&SecretName::new("nope"), &Selector::Stage(Stage::Current))
            .await
            .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::NotFound);
        let e = s
            .put_value(&SecretName::new("nope"), &bytes("v"), "t9")
            .await;
        assert_eq!(e.unwrap_err().kind, StoreErrorKind::NotFound);
    }
    let s = LocalStore::open(dir.path()).unwrap();
    let v = s
        .get_value(&n, &Selector::Stage(Stage::Current))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.value.as_bytes(), &[0, 159, 255]);
}

#[tokio::test]
async fn unlabelled_versions_are_pruned_beyond_100() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    let n = SecretName::new("many");
    s.create_secret(&n, &bytes("v0"), "t0").await.unwrap();
    for i in 1..110 {
        s.put_value(&n, &bytes(&format!("v{i}")), &format!("t{i}"))
            .await
            .unwrap();
    }
    assert_eq!(s.list_version_ids(&n).await.unwrap().len(), 102);
    assert_eq!(
        text(&s, &n, Selector::Stage(Stage::Current)).await.unwrap(),
        "v109"
    );
}

fn label(l: &str) -> Label {
    Label::parse(l).unwrap()
}

async fn labels_of(store: &LocalStore, name: &SecretName, id: &str) -> Vec<String> {
    let d = store.describe(name).await.unwrap();
    let (_, labels) = d.versions.iter().find(|(v, _)| v.as_str() == id).unwrap();
    labels.clone()
}

#[tokio::test]
async fn a_staged_put_leaves_current_and_moves_its_label_durably() {
    let dir = tempfile::tempdir().unwrap();
    let n = SecretName::new("app");
    let pending = label("AWSPENDING");
    {
        let s = LocalStore::open(dir.path()).unwrap();
        s.create_secret(&n, &bytes("one"), "t1").await.unwrap();
        s.put_value_staged(&n, &bytes("two"), "t2", std::slice::from_ref(&pending))
            .await
            .unwrap();
        // The same token and value: the same version.
        s.put_value_staged(&n, &bytes("two"), "t2", std::slice::from_ref(&pending))
            .await
            .unwrap();
        s.put_value_staged(&n, &bytes("three"), "t3", std::slice::from_ref(&pending))
            .await
            .unwrap();
    }
    let s = LocalStore::open(dir.path()).unwrap();
    assert_eq!(s.list_version_ids(&n).await.unwrap().len(), 3);
    assert_eq!(
        text(&s, &n, Selector::Stage(Stage::Current)).await.unwrap(),
        "one"
    );
    assert_eq!(text(&s, &n, Selector::Stage(Stage::Previous)).await, None);
    assert_eq!(labels_of(&s, &n, "t3").await, ["AWSPENDING"]);
    assert!(labels_of(&s, &n, "t2").await.is_empty(), "the label moved");
    assert_eq!(labels_of(&s, &n, "t1").await, ["AWSCURRENT"]);
    let e = s.put_value_staged(&n, &bytes("x"), "t4", &[]).await;
    assert_eq!(e.unwrap_err().kind, StoreErrorKind::InvalidParameter);
}

#[tokio::test]
async fn moving_awscurrent_moves_awsprevious_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let n = SecretName::new("app");
    let (current, pending) = (Label::of(Stage::Current), label("AWSPENDING"));
    let (t2, t3) = (VersionId::new("t2"), VersionId::new("t3"));
    {
        let s = LocalStore::open(dir.path()).unwrap();
        s.create_secret(&n, &bytes("one"), "t1").await.unwrap();
        s.put_value(&n, &bytes("two"), "t2").await.unwrap();
        s.put_value_staged(&n, &bytes("three"), "t3", std::slice::from_ref(&pending))
            .await
            .unwrap();
        s.update_stage(&n, &current, Some(&t3), Some(&t2))
            .await
            .unwrap();
        s.update_stage(&n, &pending, None, Some(&t3)).await.unwrap();
    }
    let s = LocalStore::open(dir.path()).unwrap();
    assert_eq!(labels_of(&s, &n, "t3").await, ["AWSCURRENT"]);
    assert_eq!(labels_of(&s, &n, "t2").await, ["AWSPREVIOUS"]);
    assert!(labels_of(&s, &n, "t1").await.is_empty());
    assert_eq!(
        text(&s, &n, Selector::Stage(Stage::Current)).await.unwrap(),
        "three"
    );
    // Rollback: back to t2, and t3 becomes AWSPREVIOUS.
    s.update_stage(&n, &current, Some(&t2), Some(&t3))
        .await
        .unwrap();
    assert_eq!(labels_of(&s, &n, "t2").await, ["AWSCURRENT"]);
    assert_eq!(labels_of(&s, &n, "t3").await, ["AWSPREVIOUS"]);
}

#[tokio::test]
async fn label_moves_follow_the_apis_rules() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    let n = SecretName::new("app");
    let (current, blue) = (Label::of(Stage::Current), label("blue"));
    let (t1, t2) = (VersionId::new("t1"), VersionId::new("t2"));
    s.create_secret(&n, &bytes("one"), "t1").await.unwrap();
    s.put_value(&n, &bytes("two"), "t2").await.unwrap();
    let kind = |r: StoreResult<()>| r.unwrap_err().kind;
    // AWSCURRENT is on t2: moving it without naming t2 is refused.
    assert_eq!(
        kind(s.update_stage(&n, &current, Some(&t1), None).await),
        StoreErrorKind::InvalidParameter
    );
    assert_eq!(
        kind(s.update_stage(&n, &current, Some(&t1), Some(&t1)).await),
        StoreErrorKind::InvalidParameter
    );
    assert_eq!(
        kind(s.update_stage(&n, &current, None, Some(&t2)).await),
        StoreErrorKind::InvalidParameter,
        "AWSCURRENT cannot be removed"
    );
    let nope = VersionId::new("nope");
    assert_eq!(
        kind(s.update_stage(&n, &blue, Some(&nope), None).await),
        StoreErrorKind::InvalidParameter
    );
    assert_eq!(
        kind(
            s.update_stage(&SecretName::new("x"), &blue, Some(&t1), None)
                .await
        ),
        StoreErrorKind::NotFound
    );
    // A new label attaches; moving it needs its holder; removing works.
    s.update_stage(&n, &blue, Some(&t1), None).await.unwrap();
    assert_eq!(labels_of(&s, &n, "t1").await, ["AWSPREVIOUS", "blue"]);
    assert_eq!(
        kind(s.update_stage(&n, &blue, Some(&t2), None).await),
        StoreErrorKind::InvalidParameter
    );
    s.update_stage(&n, &blue, Some(&t2), Some(&t1))
        .await
        .unwrap();
    assert_eq!(labels_of(&s, &n, "t2").await, ["AWSCURRENT", "blue"]);
    s.update_stage(&n, &blue, None, Some(&t2)).await.unwrap();
    assert_eq!(labels_of(&s, &n, "t2").await, ["AWSCURRENT"]);
    // Nothing changed by the refusals.
    assert_eq!(labels_of(&s, &n, "t1").await, ["AWSPREVIOUS"]);
}

#[tokio::test]
async fn files_are_private_and_no_temp_files_remain() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    s.seed_demo().await.unwrap();
    for e in fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(name.ends_with(".json") && !name.starts_with('.'), "{name}");
        assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}
