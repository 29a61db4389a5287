//! ForgeryTalker training and evaluation. Empty until the ForgeryTalker issues: this crate will own
//! the Forgery Prompter Network, the mask decoder and the caption/localization metrics.
