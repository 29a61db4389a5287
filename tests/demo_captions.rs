//! The demo's generated captions (`mmtt::devtools::demo_captions`) on real forgeries of the sample
//! faces: one accepted annotation per forgery without one, by `demo`, accepted by
//! `demo-reviewer`, naming only regions its mask plan covers; people's tasks left alone; nothing
//! written twice.

mod common;

use mmtt::dataset::annotation::{label_parts, region_labels, word_count};
use mmtt::devtools::demo_captions::{self, ANNOTATOR, REVIEW_COMMENT, REVIEWER};
use mmtt::storage::tables::annotations;
use mmtt::web::auth::{Role, UserName, add_user};
use sqlx::Row;

#[test]
fn demo_captions_annotate_every_open_forgery_once() {
    let env = common::Env::new();
    let dir = env.data.path().join("photos");
    common::copy_into(&common::sample_faces(), &dir);
    env.ok(&["import", "photos", "--root", &dir.display().to_string()]);
    for method in ["patch-inpaint", "classic-swap", "part-swap"] {
        env.ok(&["forge", "--method", method, "--count", "2", "--seed", "3", "--wait"]);
    }
    let n = env.db.scalar_i64("SELECT count(*) FROM forgeries");
    assert_eq!(n, 6);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let app = mmtt::app::App::open(env.data.path(), Some(&env.db.url)).await.unwrap();
        let pool = app.pool.clone();
        let forgeries: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM forgeries ORDER BY id").fetch_all(&pool).await.unwrap();
        // a person's work: one task claimed (not yet submitted), one annotation submitted
        let person = add_user(&pool, &UserName::parse("ann").unwrap(), Role::Annotator, "correct horse battery").await.unwrap();
        let (claimed, submitted) = (forgeries[0], forgeries[1]);
        sqlx::query("UPDATE annotation_tasks SET status = 'claimed', annotator_id = $2, claimed_at = now(), lease_until = now() + interval '1 hour' WHERE forgery_id = $1")
            .bind(claimed)
            .bind(person)
            .execute(&pool)
            .await
            .unwrap();
        let text = "The nose looks smeared.";
        let mut tx = pool.begin().await.unwrap();
        annotations::submit(
            &mut tx,
            &annotations::Submission {
                forgery_id: submitted,
                annotator_id: person,
                text,
                regions: &["nose"],
                word_count: 4,
                mentions: &["nose"],
                fp_labels: &[],
                active_seconds: 75.0,
                elapsed_seconds: 90.0,
                assist: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let s = demo_captions::write(&app, 3).await.unwrap();
        assert_eq!((s.written, s.already_annotated, s.left_to_people, s.no_region), (4, 1, 1, 0), "{s:?}");
        let total: i64 = s.per_split.values().map(|c| c.forgeries).sum();
        assert_eq!(total, n);
        assert_eq!(s.per_split.values().map(|c| c.demo).sum::<i64>(), 4);
        assert_eq!(s.per_split.values().map(|c| c.accepted).sum::<i64>(), 4, "the person's annotation is only submitted");

        // the person's task and annotation are untouched
        let (status, who): (String, uuid::Uuid) =
            sqlx::query_as("SELECT status, annotator_id FROM annotation_tasks WHERE forgery_id = $1").bind(claimed).fetch_one(&pool).await.unwrap();
        assert_eq!((status.as_str(), who), ("claimed", person));
        assert_eq!(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotations WHERE forgery_id = $1").bind(claimed).fetch_one(&pool).await.unwrap(),
            0
        );
        let (status, who, t): (String, uuid::Uuid, String) =
            sqlx::query_as("SELECT status, annotator_id, text FROM annotations WHERE forgery_id = $1").bind(submitted).fetch_one(&pool).await.unwrap();
        assert_eq!((status.as_str(), who, t.as_str()), ("submitted", person, text));

        // every other forgery: one accepted demo caption, stored as the annotation and review pages store theirs
        let demo: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = $1 AND disabled AND password_hash LIKE '!%'")
            .bind(ANNOTATOR)
            .fetch_one(&pool)
            .await
            .expect("the `demo` account, disabled, no password");
        let reviewer: uuid::Uuid =
            sqlx::query_scalar("SELECT id FROM users WHERE name = $1 AND role = 'reviewer'").bind(REVIEWER).fetch_one(&pool).await.unwrap();
        let rows = sqlx::query(
            "SELECT a.id, a.text, a.regions, a.mentions, a.fp_labels, a.word_count, a.status, a.annotator_id, a.version, p.parts, t.status, t.annotator_id \
             FROM annotations a JOIN forgeries f ON f.id = a.forgery_id JOIN mask_plans p ON p.id = f.plan_id \
             JOIN annotation_tasks t ON t.forgery_id = f.id WHERE a.forgery_id <> $1 ORDER BY a.forgery_id",
        )
        .bind(submitted)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 4);
        let mut texts = Vec::new();
        for r in &rows {
            let id: uuid::Uuid = r.get(0);
            let text: String = r.get(1);
            let (regions, mentions, fp, parts): (Vec<String>, Vec<String>, Vec<String>, Vec<String>) = (r.get(2), r.get(3), r.get(4), r.get(9));
            assert_eq!((r.get::<String, _>(6).as_str(), r.get::<uuid::Uuid, _>(7), r.get::<i32, _>(8)), ("accepted", demo, 2), "{text}");
            assert_eq!((r.get::<String, _>(10).as_str(), r.get::<uuid::Uuid, _>(11)), ("accepted", demo));
            assert_eq!(r.get::<i32, _>(5) as usize, word_count(&text));
            let labels = region_labels(&text);
            assert!(!labels.is_empty(), "{text}");
            assert_eq!(regions, labels, "the chips are the text's regions");
            assert_eq!(mentions, labels);
            // every region named lies on a masked part (of the plan), and none is flagged from the masks
            for l in &labels {
                assert!(label_parts(l).iter().any(|p| parts.contains(&p.to_string())), "{text}: `{l}` is not on the masked parts {parts:?}");
            }
            assert!(fp.is_empty(), "{text}: flagged {fp:?} against the masks");
            let revs = sqlx::query("SELECT action, author_id, comment, text FROM annotation_revisions WHERE annotation_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&pool)
                .await
                .unwrap();
            let revs: Vec<(String, uuid::Uuid, Option<String>, String)> = revs.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
            assert_eq!(
                revs,
                vec![
                    ("submit".to_string(), demo, None, text.clone()),
                    ("accept".to_string(), reviewer, Some(REVIEW_COMMENT.to_string()), text.clone())
                ]
            );
            texts.push(text);
        }
        texts.sort();
        texts.dedup();
        assert!(texts.len() >= 3, "captions vary: {texts:?}");

        // again: nothing new, nothing changed
        let revisions = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotation_revisions").fetch_one(&pool).await.unwrap();
        let s = demo_captions::write(&app, 3).await.unwrap();
        assert_eq!((s.written, s.already_annotated, s.left_to_people), (0, 5, 1), "{s:?}");
        assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM annotation_revisions").fetch_one(&pool).await.unwrap(), revisions);
        let mut again: Vec<String> = sqlx::query_scalar("SELECT text FROM annotations WHERE annotator_id = $1").bind(demo).fetch_all(&pool).await.unwrap();
        again.sort();
        again.dedup();
        assert_eq!(again, texts);
        app.close().await.unwrap();
    });
}
