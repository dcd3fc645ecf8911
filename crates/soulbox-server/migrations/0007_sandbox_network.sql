-- Egress control (issue 13): a sandbox's network configuration as given (JSON in E2B's
-- shape; header rules name secrets, never hold their values), whether its port URLs are
-- public, and its egress CA (sealed: key and certificate).
ALTER TABLE sandboxes ADD COLUMN network TEXT;
ALTER TABLE sandboxes ADD COLUMN public_traffic INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sandboxes ADD COLUMN egress_ca TEXT;
