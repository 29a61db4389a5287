//! The stored statuses that several parts read and write, as enums: the text in the database
//! (and its `CHECK` constraint) is [`as_str`](AnnotationStatus::as_str), parsed back with `FromStr`.
//! The forge queue's and the job system's states belong to `jobs`.

use std::fmt;
use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }

            /// The stored texts of `values`, for binding as a `text[]`.
            pub fn texts(values: &[$name]) -> Vec<&'static str> {
                values.iter().map(|v| v.as_str()).collect()
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|x| x.as_str() == s).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|x| x.as_str()).collect();
                    format!("unknown {} `{s}`: one of {}", $what, known.join(", "))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// `project_settings.assist_mode`, `annotation_tasks.assist_mode`, `annotations.assist_mode`:
    /// how the model helps annotators (issue 17).
    AssistMode, "assistance mode" {
        /// No suggestion is shown: the annotation flow of before.
        Off => "off",
        /// The model's regions and mask are shown once the annotator has written a first draft.
        Hint => "hint",
        /// The model's explanation is the starting draft.
        Prefill => "prefill",
    }
);

text_enum!(
    /// `annotations.status`: a caption's review state.
    AnnotationStatus, "annotation status" {
        /// Written by its annotator, waiting for review.
        Submitted => "submitted",
        Accepted => "accepted",
        /// Sent back to its annotator.
        Returned => "returned",
    }
);

text_enum!(
    /// `annotation_tasks.status`: where a forgery's annotation task is.
    TaskStatus, "task status" {
        Open => "open",
        Claimed => "claimed",
        Submitted => "submitted",
        Skipped => "skipped",
        Accepted => "accepted",
        Returned => "returned",
    }
);

text_enum!(
    /// `annotation_revisions.action`: what made a version of an annotation.
    RevisionAction, "revision action" {
        /// Its annotator submitted it (or, for synthetic data, the seeder wrote it).
        Submit => "submit",
        /// A reviewer accepted it as it was.
        Accept => "accept",
        /// A reviewer edited the text or chips and accepted it.
        EditAccept => "edit_accept",
        /// A reviewer returned it to its annotator.
        Return => "return",
        /// It arrived accepted with its sample (the authors' release).
        Import => "import",
    }
);

text_enum!(
    /// `sources.dataset`: where a source face came from.
    SourceDataset, "source dataset" {
        CelebAMaskHq => "celebamask-hq",
        Ffhq => "ffhq",
        Photos => "photos",
        Synthetic => "synthetic",
        MmttRelease => "mmtt-release",
    }
);

/// The annotation statuses of the samples an export or the statistics count: accepted ones, and
/// with `include_unreviewed` the submitted ones too.
pub fn exported_statuses(include_unreviewed: bool) -> Vec<AnnotationStatus> {
    if include_unreviewed { vec![AnnotationStatus::Accepted, AnnotationStatus::Submitted] } else { vec![AnnotationStatus::Accepted] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in AnnotationStatus::ALL {
            assert_eq!(s.as_str().parse::<AnnotationStatus>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        for s in RevisionAction::ALL {
            assert_eq!(s.to_string().parse::<RevisionAction>(), Ok(*s));
        }
        for s in TaskStatus::ALL {
            assert_eq!(s.to_string().parse::<TaskStatus>(), Ok(*s));
        }
        assert_eq!("mmtt-release".parse::<SourceDataset>(), Ok(SourceDataset::MmttRelease));
        let e = "ok".parse::<AnnotationStatus>().unwrap_err();
        assert!(e.contains("unknown annotation status `ok`") && e.contains("submitted, accepted, returned"), "{e}");
    }
}
