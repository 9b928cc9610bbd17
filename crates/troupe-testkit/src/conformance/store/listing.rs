//! The read-back checks of the store suite: listing tasks newest first
//! (filtered by status, paged with `before`, with subtask counts) and long
//! multilingual text coming back byte for byte.

use troupe_core::ledger::SubtaskChange;
use troupe_core::store::{Stores, TaskQuery, TaskUpdate};
use troupe_core::task::TaskStatus;

use super::{StoreSuite, agent, new_task, sid, subtask};

impl StoreSuite {
    /// Listing is newest first, filters by status, pages with `before`, counts subtasks.
    pub async fn lists_tasks_newest_first(&self, stores: Stores) {
        let check = "lists_tasks_newest_first";
        let mut ours = Vec::new();
        for i in 0..5 {
            let t = new_task(&format!("goal {i}"));
            stores.tasks.create_task(&t).await.unwrap();
            ours.push(t.id);
        }
        ours.sort_by(|a, b| b.cmp(a));
        let plan = [
            subtask("s1", "writer", 0, &[]),
            subtask("s2", "writer", 0, &[]),
        ];
        stores
            .tasks
            .save_plan(ours[0], 0, &[], &plan)
            .await
            .unwrap();
        stores
            .tasks
            .update_subtask(
                ours[0],
                &sid("s1"),
                &SubtaskChange::Dispatched { attempt: 1 },
                None,
            )
            .await
            .unwrap();
        let done = SubtaskChange::Completed {
            attempt: 1,
            agent: agent(),
            result: "r".into(),
        };
        stores
            .tasks
            .update_subtask(ours[0], &sid("s1"), &done, None)
            .await
            .unwrap();
        for id in &ours[..2] {
            stores
                .tasks
                .update_task(*id, &TaskUpdate::status(TaskStatus::Completed))
                .await
                .unwrap();
        }

        let mine = |list: Vec<troupe_core::task::TaskSummary>| -> Vec<_> {
            list.into_iter().filter(|s| ours.contains(&s.id)).collect()
        };
        let all = mine(
            stores
                .tasks
                .list_tasks(&TaskQuery {
                    limit: 10_000,
                    ..TaskQuery::default()
                })
                .await
                .unwrap(),
        );
        assert_eq!(
            all.iter().map(|s| s.id).collect::<Vec<_>>(),
            ours,
            "{check}: not newest first"
        );
        assert_eq!(
            (all[0].subtasks_total, all[0].subtasks_completed),
            (2, 1),
            "{check}"
        );
        assert_eq!(all[0].status, TaskStatus::Completed, "{check}");
        assert_eq!(all[4].goal, "goal 0", "{check}");

        let completed = TaskQuery {
            status: Some(TaskStatus::Completed),
            limit: 10_000,
            ..TaskQuery::default()
        };
        let completed = mine(stores.tasks.list_tasks(&completed).await.unwrap());
        assert_eq!(
            completed.iter().map(|s| s.id).collect::<Vec<_>>(),
            ours[..2].to_vec(),
            "{check}"
        );

        let page = TaskQuery {
            before: Some(ours[2]),
            limit: 10_000,
            ..TaskQuery::default()
        };
        let page = mine(stores.tasks.list_tasks(&page).await.unwrap());
        assert_eq!(
            page.iter().map(|s| s.id).collect::<Vec<_>>(),
            ours[3..].to_vec(),
            "{check}"
        );

        let one = stores
            .tasks
            .list_tasks(&TaskQuery {
                limit: 1,
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(one.len(), 1, "{check}: limit ignored");
    }

    /// Long and multilingual text comes back byte for byte.
    pub async fn keeps_large_and_unicode_text(&self, stores: Stores) {
        let check = "keeps_large_and_unicode_text";
        let task = new_task("goal");
        stores.tasks.create_task(&task).await.unwrap();
        stores
            .tasks
            .save_plan(task.id, 0, &[], &[subtask("s1", "writer", 0, &[])])
            .await
            .unwrap();
        let text: String = "Ünïcödé 漢字 🚀 'quotes' \"double\" \\ back\n".repeat(5_000);
        let s1 = sid("s1");
        stores
            .tasks
            .update_subtask(
                task.id,
                &s1,
                &SubtaskChange::Dispatched { attempt: 1 },
                None,
            )
            .await
            .unwrap();
        let done = SubtaskChange::Completed {
            attempt: 1,
            agent: agent(),
            result: text.clone(),
        };
        stores
            .tasks
            .update_subtask(task.id, &s1, &done, None)
            .await
            .unwrap();
        let got = stores.tasks.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(
            got.subtask(&s1).unwrap().result.as_deref(),
            Some(text.as_str()),
            "{check}"
        );
    }
}
