// Placeholder: being written in this change.
