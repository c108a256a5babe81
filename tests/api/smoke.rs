//! The contract's own example, end to end.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn contract_example_creates_and_stores() {
    let app = spawn_app().await;
    let mut params = valid_params();
    params["estimatedValue"] = json!(125000.5);
    params["expectedCloseDate"] = json!("2027-03-31T19:00:00+02:00");
    let response = app.create(params).await;
    let result = &response["result"];
    assert_eq!(result["workspaceId"], app.workspace.to_string(), "{response}");
    assert_eq!(result["estimatedValue"], json!(125000.5));
    assert_eq!(result["expectedCloseDate"], "2027-03-31T17:00:00Z");
    assert_eq!(result["stage"], "lead");
    assert_eq!(result["solutionFamilies"], json!([]));
    assert_eq!(result["createdBy"], app.user.to_string());
    assert_eq!(app.count(Some(app.workspace)).await, 1);
}
