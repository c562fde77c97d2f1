-- Schema version 5: each registry's IAM policy (`:setIamPolicy`), as its proto3 JSON with the
-- etag the store gave it; NULL until one is set, which reads as the empty policy. It goes with
-- its registry's row.

ALTER TABLE registries ADD COLUMN iam_policy TEXT;
