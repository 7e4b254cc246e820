"""ISO 4217 currencies and their minor units (digits after the decimal point).

The table follows ISO 4217 list one (2026). Codes without a minor unit (gold, silver,
SDR, testing codes: XAU, XAG, XDR, XTS, XXX, ...) are not money a tenant reconciles and
are refused. ANG stays for older statements although XCG replaced it in 2025.
"""

from __future__ import annotations

from typing import Final

_ZERO: Final = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE: Final = "BHD IQD JOD KWD LYD OMR TND"
_FOUR: Final = "CLF UYW"
_TWO: Final = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
    "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
    "UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

MINOR_UNITS: Final[dict[str, int]] = {
    code: digits
    for digits, codes in ((0, _ZERO), (2, _TWO), (3, _THREE), (4, _FOUR))
    for code in codes.split()
}
"""Currency code -> number of minor-unit digits (JPY 0, USD 2, KWD 3, CLF 4)."""

MAX_MINOR_UNITS: Final = max(MINOR_UNITS.values())


def minor_units(code: str) -> int:
    """Digits after the decimal point for `code` (upper-case ISO 4217); KeyError if unknown."""
    return MINOR_UNITS[code]


def format_amount(minor: int, code: str) -> str:
    """Minor units as decimal text in `code`'s precision: (-1250, "USD") -> "-12.50"."""
    digits = MINOR_UNITS[code]
    sign, whole = ("-" if minor < 0 else ""), abs(minor)
    if digits == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole // 10**digits}.{whole % 10**digits:0{digits}d}"
