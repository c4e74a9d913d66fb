package inferencelog

// ProvideColStr is the sink's clickhouse-go ColStrProvider, for the test
// that watches what it hands the driver.
var ProvideColStr = provideColStr
