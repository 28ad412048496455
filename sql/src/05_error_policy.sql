-- ---------------------------------------------------------------------
-- Error policy
-- ---------------------------------------------------------------------

-- What a sender does with each error.  code is a Graph API error.code, or
-- a transport class: timeout, connect, reset, tls, http_5xx, bad_response,
-- transport; '*' is the rule for any code not listed.
--
-- origin says where a row comes from: 'builtin' as the extension ships it,
-- 'edited' a built-in code a user changed, 'added' a code a user added.  pg_dump
-- dumps the edited and added rows only (CREATE EXTENSION makes the
-- built-in rows again on restore), and _error_policy_track keeps origin
-- up to date; nobody but superusers can write origin itself.  The default
-- is 'builtin' only while this script inserts the shipped rows.
CREATE TABLE wasend.error_policy (
    code            text PRIMARY KEY,
    action          text NOT NULL
                    CHECK (action IN ('retry', 'fail', 'pause_number', 'pause_campaign')),
    backoff         interval NOT NULL DEFAULT '2 seconds'
                    CHECK (backoff >= '0'::interval),
    backoff_factor  double precision NOT NULL DEFAULT 2
                    CHECK (backoff_factor >= 1::double precision),
    pause_for       interval CHECK (pause_for > '0'::interval),
    slow_down       boolean NOT NULL DEFAULT false,
    description     text,
    origin          text NOT NULL DEFAULT 'builtin'
                    CHECK (origin IN ('builtin', 'edited', 'added'))
);
-- retry_once and jitter are added by ALTER TABLE, so that a fresh
-- install's catalog equals an updated one's (pg_attribute.atthasmissing:
-- see wasend.whatsapp_numbers; test/t/020_upgrade.pl compares).
ALTER TABLE wasend.error_policy
    ADD COLUMN retry_once boolean NOT NULL DEFAULT false,
    ADD COLUMN jitter double precision NOT NULL DEFAULT 0.2
        CONSTRAINT error_policy_jitter_check CHECK (jitter >= 0::double precision AND jitter <= 1::double precision);
COMMENT ON TABLE wasend.error_policy IS
'Per error code: retry (after backoff * backoff_factor^(attempt-1), +-20% jitter), fail, pause the number (for pause_for, or until resumed) or pause the campaign';
COMMENT ON COLUMN wasend.error_policy.origin IS
'builtin: as the extension ships it; edited: a built-in code changed since; added: a code added.  pg_dump keeps edited and added rows';
COMMENT ON COLUMN wasend.error_policy.retry_once IS
'retry: a row whose previous attempt already failed with this code fails instead';
COMMENT ON COLUMN wasend.error_policy.jitter IS
'retry: the wait is backoff * factor^(attempt-1) times a random factor in [1 - jitter, 1 + jitter]';
REVOKE ALL ON wasend.error_policy FROM PUBLIC;
GRANT SELECT ON wasend.error_policy TO wasend_viewer;
GRANT INSERT (code, action, backoff, backoff_factor, pause_for, slow_down, description),
      UPDATE (code, action, backoff, backoff_factor, pause_for, slow_down, description),
      DELETE
    ON wasend.error_policy TO wasend_admin;
GRANT INSERT (retry_once, jitter), UPDATE (retry_once, jitter) ON wasend.error_policy TO wasend_admin;

INSERT INTO wasend.error_policy (code, action, backoff, backoff_factor, pause_for, slow_down, description) VALUES
    ('130429', 'retry', '1 second', 1, NULL, true, 'throughput limit: slow the number down, retry'),
    ('131056', 'retry', '4 seconds', 4, NULL, false, 'pair rate limit: retry this recipient after 4^attempt s'),
    ('131057', 'retry', '10 seconds', 1, NULL, false, 'account in maintenance or throughput upgrade'),
    ('1', 'retry', '2 seconds', 2, NULL, false, 'temporary API error'),
    ('2', 'retry', '2 seconds', 2, NULL, false, 'temporary API error'),
    ('131000', 'retry', '2 seconds', 2, NULL, false, 'something went wrong'),
    ('131016', 'retry', '2 seconds', 2, NULL, false, 'service unavailable'),
    ('133004', 'retry', '2 seconds', 2, NULL, false, 'server temporarily unavailable'),
    ('4', 'pause_number', '2 seconds', 2, '10 minutes', false, 'app rate limit'),
    ('80007', 'pause_number', '2 seconds', 2, '10 minutes', false, 'WABA rate limit'),
    ('131048', 'pause_number', '2 seconds', 2, '10 minutes', false, 'spam rate limit: quality problem'),
    ('368', 'pause_number', '2 seconds', 2, NULL, false, 'account blocked for policy violations'),
    ('131031', 'pause_number', '2 seconds', 2, NULL, false, 'account locked'),
    ('131042', 'pause_number', '2 seconds', 2, NULL, false, 'payment problem'),
    ('133010', 'pause_number', '2 seconds', 2, NULL, false, 'phone number not registered'),
    ('131064', 'pause_number', '2 seconds', 2, NULL, false, 'template category violation'),
    ('0', 'pause_number', '2 seconds', 2, NULL, false, 'authentication exception'),
    ('190', 'pause_number', '2 seconds', 2, NULL, false, 'access token invalid or expired'),
    ('10', 'pause_number', '2 seconds', 2, NULL, false, 'permission denied'),
    ('100', 'fail', '2 seconds', 2, NULL, false, 'invalid parameter: this row''s message is wrong, fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('131051', 'fail', '2 seconds', 2, NULL, false, 'unsupported message type: this row''s message is wrong, fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('135000', 'fail', '2 seconds', 2, NULL, false, 'generic user error: this row''s message is wrong, fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('132000', 'fail', '2 seconds', 2, NULL, false, 'template parameter count mismatch in this row''s message: fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('132001', 'pause_campaign', '2 seconds', 2, NULL, false, 'template does not exist: the template itself, pause the campaign'),
    ('132012', 'fail', '2 seconds', 2, NULL, false, 'template parameter format mismatch in this row''s message: fail the row (the circuit breaker pauses a campaign whose rows keep failing)'),
    ('132015', 'pause_campaign', '2 seconds', 2, NULL, false, 'template paused: the template itself, pause the campaign'),
    ('132016', 'pause_campaign', '2 seconds', 2, NULL, false, 'template disabled: the template itself, pause the campaign'),
    ('131062', 'fail', '2 seconds', 2, NULL, false, 'business-scoped user id recipients are not supported for this message (authentication one-tap, zero-tap and copy-code templates): fail the row; send it to the phone number'),
    ('131055', 'pause_number', '2 seconds', 2, NULL, false, 'Marketing Messages API terms not accepted: a person must accept them in WhatsApp Manager, then resume the number'),
    ('131026', 'fail', '2 seconds', 2, NULL, false, 'undeliverable'),
    ('131050', 'fail', '2 seconds', 2, NULL, false, 'recipient stopped marketing messages: fail, suppress for marketing'),
    ('130403', 'fail', '2 seconds', 2, NULL, false, 'recipient blocked by the business'),
    ('131047', 'fail', '2 seconds', 2, NULL, false, '24-hour window closed'),
    ('timeout', 'retry', '2 seconds', 2, NULL, false, 'no answer in wasend.request_timeout_ms (may have been sent)'),
    ('connect', 'retry', '2 seconds', 2, NULL, false, 'could not connect'),
    ('reset', 'retry', '2 seconds', 2, NULL, false, 'connection dropped (may have been sent)'),
    ('tls', 'retry', '2 seconds', 2, NULL, false, 'TLS failure'),
    ('transport', 'retry', '2 seconds', 2, NULL, false, 'other transport failure'),
    ('http_5xx', 'retry', '2 seconds', 2, NULL, false, 'HTTP 5xx without an error body'),
    ('bad_response', 'fail', '2 seconds', 2, NULL, false, 'answer without JSON or message id'),
    ('*', 'fail', '2 seconds', 2, NULL, false, 'any other error');
INSERT INTO wasend.error_policy (code, action, description)
SELECT g::text, 'pause_number', 'permission missing' FROM pg_catalog.generate_series(200, 299) g;
-- per-user marketing limit: wait 24 h, try once more
INSERT INTO wasend.error_policy (code, action, backoff, backoff_factor, pause_for, slow_down, description,
                                 retry_once, jitter) VALUES
    ('131049', 'retry', '24 hours', 1, NULL, false, 'per-user marketing limit: wait 24 hours, try once more',
     true, 0);
-- every row inserted after the shipped ones is one a user added
ALTER TABLE wasend.error_policy ALTER COLUMN origin SET DEFAULT 'added';

-- Keeps wasend.error_policy.origin right, so that pg_dump dumps what
-- users changed: an UPDATE of a built-in row makes it 'edited' ('added'
-- if its code changed: the built-in code is gone).  An INSERT of a row
-- that says it is not 'added' comes from a restore (users cannot write
-- origin): if its code exists, made by CREATE EXTENSION, the row replaces
-- it instead of failing on the primary key.  A user's INSERT of an
-- existing code still fails.  A change of any policy column counts as an
-- edit.  Runs as the writer.
CREATE FUNCTION wasend._error_policy_track() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.origin = 'builtin' AND NEW.origin = 'builtin' THEN
            IF NEW.code IS DISTINCT FROM OLD.code THEN
                NEW.origin := 'added';
            ELSIF ROW(NEW.action, NEW.backoff, NEW.backoff_factor, NEW.pause_for,
                      NEW.slow_down, NEW.description, NEW.retry_once, NEW.jitter)
                  IS DISTINCT FROM
                  ROW(OLD.action, OLD.backoff, OLD.backoff_factor, OLD.pause_for,
                      OLD.slow_down, OLD.description, OLD.retry_once, OLD.jitter) THEN
                NEW.origin := 'edited';
            END IF;
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.origin <> 'added' THEN
        UPDATE wasend.error_policy p
           SET action = NEW.action, backoff = NEW.backoff, backoff_factor = NEW.backoff_factor,
               pause_for = NEW.pause_for, slow_down = NEW.slow_down,
               description = NEW.description, retry_once = NEW.retry_once, jitter = NEW.jitter,
               origin = NEW.origin
         WHERE p.code = NEW.code;
        IF FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._error_policy_track() FROM PUBLIC;

CREATE TRIGGER error_policy_track
    BEFORE INSERT OR UPDATE ON wasend.error_policy
    FOR EACH ROW EXECUTE FUNCTION wasend._error_policy_track();

-- Validates the policy columns an administrator edits.  The backoff and
-- pause are bounded so that no answer's retry time or pause can overflow
-- (the record would fail on it).
CREATE FUNCTION wasend._error_policy_check() RETURNS trigger
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.code IS NULL OR NEW.code !~ '^(\*|-?[0-9]{1,9}|[a-z][a-z0-9_]{0,63})$' THEN
        RAISE EXCEPTION 'invalid error policy code "%"', coalesce(NEW.code, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a Graph API error code (e.g. 131056), a transport class (timeout, connect, reset, tls, http_5xx, bad_response, transport), or * for every other error.';
    END IF;
    IF NEW.action IS NULL OR NEW.action NOT IN ('retry', 'fail', 'pause_number', 'pause_campaign') THEN
        RAISE EXCEPTION 'error policy action must be retry, fail, pause_number or pause_campaign, not %', coalesce(NEW.action, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'retry puts the row back after a backoff, fail fails it, pause_number and pause_campaign pause with the reason stored.';
    END IF;
    IF NEW.backoff IS NULL OR NEW.backoff < '0'::interval OR NEW.backoff > '1 year'::interval THEN
        RAISE EXCEPTION 'backoff must be between 0 and a year, not %', coalesce(NEW.backoff::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the wait before the first retry, e.g. ''2 seconds''; later retries multiply it by backoff_factor, up to 24 hours.';
    END IF;
    IF NEW.backoff_factor IS NULL OR NEW.backoff_factor = 'NaN'::float8
       OR NOT (NEW.backoff_factor BETWEEN 1 AND 1000) THEN
        RAISE EXCEPTION 'backoff_factor must be between 1 and 1000, not %', coalesce(NEW.backoff_factor::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Each retry waits backoff_factor times longer than the one before, e.g. 2.';
    END IF;
    IF NEW.pause_for <= '0'::interval OR NEW.pause_for > '1 year'::interval THEN
        RAISE EXCEPTION 'pause_for must be positive and at most a year, not %', NEW.pause_for
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long a pause_number lasts, e.g. ''10 minutes'', or NULL for a pause until a person resumes the number.';
    END IF;
    IF NEW.slow_down IS NULL OR NEW.retry_once IS NULL THEN
        RAISE EXCEPTION 'slow_down and retry_once must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give true or false.';
    END IF;
    IF NEW.jitter IS NULL OR NEW.jitter = 'NaN'::float8 OR NOT (NEW.jitter BETWEEN 0 AND 1) THEN
        RAISE EXCEPTION 'jitter must be between 0 and 1, not %', coalesce(NEW.jitter::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the share by which a backoff may vary either way, e.g. 0.2 for 20%, or 0 for none.';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION wasend._error_policy_check() FROM PUBLIC;
-- named so that it fires before error_policy_track (triggers fire by name)
CREATE TRIGGER error_policy_check BEFORE INSERT OR UPDATE ON wasend.error_policy
    FOR EACH ROW EXECUTE FUNCTION wasend._error_policy_check();
