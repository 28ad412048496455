/*
 * phone.cpp: the C++ shim between wasend and Google's libphonenumber.
 *
 * libphonenumber knows every country's national and international
 * prefixes, its trunk prefix rules (Italy keeps its 0, Hungary's is 06,
 * ...) and the lengths its numbers have; wasend asks it rather than keep
 * rules of its own.  Every exception stays inside this file: a C++
 * exception must never unwind through PostgreSQL's C frames, and nothing
 * here may ereport (which would longjmp over C++ frames).  The functions
 * return a status and their C callers (src/recipient.c) report it.
 * They are noinline so that PostgreSQL's JIT, which may inline the
 * extension's bitcode into a query, never pulls C++ code into one.
 */
#include "phone.h"

#include <cstring>
#include <string>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

/* Copy s into out (outlen bytes), or say that it does not fit. */
static bool
copy_out(const std::string &s, char *out, size_t outlen)
{
	if (s.size() + 1 > outlen)
		return false;
	memcpy(out, s.c_str(), s.size() + 1);
	return true;
}

/*
 * Parse a number as written in region (an ISO 3166 code; "ZZ" or NULL
 * for none: then only a number with its international prefix parses),
 * and when its length is one its country's numbers have, put it in
 * E.164 ("+" and digits) into out.  Acceptance is by length only
 * (IsPossibleNumber), not by the country's assigned ranges
 * (IsValidNumber): fictional numbers such as 555 ones must pass.
 */
extern "C" __attribute__((noinline)) WasendPhoneStatus
wasend_phone_parse(const char *number, const char *region, char *out, size_t outlen)
{
	try
	{
		const PhoneNumberUtil *util = PhoneNumberUtil::GetInstance();
		PhoneNumber n;
		std::string e164;

		switch (util->Parse(number, region ? region : "ZZ", &n))
		{
			case PhoneNumberUtil::NO_PARSING_ERROR:
				break;
			case PhoneNumberUtil::INVALID_COUNTRY_CODE_ERROR:
				return WASEND_PHONE_NO_COUNTRY;
			case PhoneNumberUtil::TOO_SHORT_AFTER_IDD:
			case PhoneNumberUtil::TOO_SHORT_NSN:
				return WASEND_PHONE_TOO_SHORT;
			case PhoneNumberUtil::TOO_LONG_NSN:
				return WASEND_PHONE_TOO_LONG;
			default:
				return WASEND_PHONE_NOT_A_NUMBER;
		}
		switch (util->IsPossibleNumberWithReason(n))
		{
			case PhoneNumberUtil::IS_POSSIBLE:
				break;
			case PhoneNumberUtil::IS_POSSIBLE_LOCAL_ONLY:
				return WASEND_PHONE_LOCAL_ONLY;
			case PhoneNumberUtil::INVALID_COUNTRY_CODE:
				return WASEND_PHONE_NO_COUNTRY;
			case PhoneNumberUtil::TOO_SHORT:
				return WASEND_PHONE_TOO_SHORT;
			case PhoneNumberUtil::TOO_LONG:
				return WASEND_PHONE_TOO_LONG;
			default:
				return WASEND_PHONE_BAD_LENGTH;
		}
		util->Format(n, PhoneNumberUtil::E164, &e164);
		return copy_out(e164, out, outlen) ? WASEND_PHONE_OK : WASEND_PHONE_TOO_LONG;
	}
	catch (...)
	{
		return WASEND_PHONE_FAILED;
	}
}

/*
 * The ISO 3166 code of the main country of a calling code (49: DE, 1:
 * US), "001" for a non-geographic one, into out; 0 when libphonenumber
 * knows none (or failed), else 1.
 */
extern "C" __attribute__((noinline)) int
wasend_phone_region_of(int calling_code, char *out, size_t outlen)
{
	try
	{
		std::string r;

		PhoneNumberUtil::GetInstance()->GetRegionCodeForCountryCode(calling_code, &r);
		if (r == "ZZ")
			return 0;
		return copy_out(r, out, outlen) ? 1 : 0;
	}
	catch (...)
	{
		return 0;
	}
}
