-- numbers: wasend_add_number validates everything and keeps nothing on error
\set SHOW_CONTEXT never
SELECT wasend.wasend_add_number('106540352242922', 'EAAG-token', 200);
SELECT wasend.wasend_add_number('2001', 'tok2');  -- default rate 80
SELECT id, phone_number_id, max_send_rate_per_sec, status FROM wasend.whatsapp_numbers ORDER BY id;
-- bad input
SELECT wasend.wasend_add_number('+1 555 123', 'tok', 80);
SELECT wasend.wasend_add_number(NULL, 'tok', 80);
SELECT wasend.wasend_add_number('3001', '', 80);
SELECT wasend.wasend_add_number('3001', 'Bearer abc', 80);
SELECT wasend.wasend_add_number('3001', NULL, 80);
SELECT wasend.wasend_add_number('3001', 'tok', 0);
SELECT wasend.wasend_add_number('3001', 'tok', -5);
SELECT wasend.wasend_add_number('3001', 'tok', 1001);
SELECT wasend.wasend_add_number('3001', 'tok', NULL);
SELECT wasend.wasend_add_number('106540352242922', 'other', 80);
-- the table enforces the same rules for direct writes
\set VERBOSITY terse
INSERT INTO wasend.whatsapp_numbers (phone_number_id, access_token, max_send_rate_per_sec)
VALUES ('3001', 'tok', 5000);
\set VERBOSITY default
SELECT count(*) AS numbers FROM wasend.whatsapp_numbers;
